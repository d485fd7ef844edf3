"""Pieces of documents (lines, paragraphs) as text, all documents at once.

The repetition rules compare pieces by their exact text; keeping a `doc` index per piece
lets every measure be a numpy reduction (`per_doc_sum`) instead of a Python loop per
document or per piece. Where the pieces lie is found by layout.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Pieces:
    """Pieces of `n_docs` documents: `values[i]` belongs to document `doc[i]` (ascending)."""

    values: pa.Array
    doc: np.ndarray
    n_docs: int

    def __len__(self) -> int:
        return len(self.doc)

    def lengths(self) -> np.ndarray:
        """Characters (code points) per piece."""
        return np.asarray(pc.utf8_length(self.values), dtype=np.int64)

    def ids(self) -> np.ndarray:
        """An integer per piece, equal for equal pieces (across the whole partition)."""
        encoded = pc.dictionary_encode(self.values)
        return np.asarray(encoded.indices, dtype=np.int64)

    def first_occurrence(self) -> np.ndarray:
        """True for a piece whose exact text has not occurred earlier in its document."""
        codes, _ = pd.factorize(self.doc * (len(self) + 1) + self.ids())
        # Codes follow first occurrence: a first one exceeds every code before it.
        first = np.ones(len(self), dtype=bool)
        first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
        return first


def as_text_array(texts) -> pa.Array:
    """Texts as one large_string array (64-bit offsets: a partition may exceed 2 GiB).
    A pandas column backed by several Arrow chunks (pandas 3's `str` after a concat)
    becomes one array."""
    array = pa.array(texts, type=pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def per_doc_sum(pieces: Pieces, weights: np.ndarray | None = None) -> np.ndarray:
    """Per document: the number of pieces, or the sum of `weights` over its pieces."""
    return np.bincount(pieces.doc, weights=weights, minlength=pieces.n_docs).astype(np.float64)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (nothing to measure)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
