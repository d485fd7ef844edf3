"""Documents cut into pieces (words, lines, paragraphs), all documents at once.

Every rule measures something over the pieces of each document. Splitting a whole
partition with one Arrow kernel and keeping a `doc` index per piece lets every measure be
a numpy reduction (`per_doc_sum`) instead of a Python loop per document or per piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARAGRAPH_BREAK = r"\n[ \t\r\f\v]*\n"


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

    def select(self, mask: np.ndarray) -> Pieces:
        return Pieces(self.values.filter(pa.array(mask)), self.doc[mask], self.n_docs)

    def ids(self) -> np.ndarray:
        """An integer per piece, equal for equal pieces (across the whole partition)."""
        encoded = pc.dictionary_encode(self.values)
        return np.asarray(encoded.indices, dtype=np.int64)

    def first_occurrence(self) -> np.ndarray:
        """True for a piece whose exact text has not occurred earlier in its document."""
        key = self.doc * (len(self) + 1) + self.ids()
        _, first = np.unique(key, return_index=True)
        mask = np.zeros(len(self), dtype=bool)
        mask[first] = True
        return mask


def as_text_array(texts) -> pa.Array:
    """Texts as one large_string array (64-bit offsets: a partition may exceed 2 GiB).
    A pandas column backed by several Arrow chunks (pandas 3's `str` after a concat)
    becomes one array."""
    array = pa.array(texts, type=pa.large_string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _from_lists(lists: pa.ListArray, n_docs: int) -> Pieces:
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    doc = np.repeat(np.arange(n_docs), np.diff(offsets))
    return Pieces(lists.flatten(), doc, n_docs)


def split_words(texts: pa.Array) -> Pieces:
    """Whitespace-separated words; a document of only whitespace has none."""
    pieces = _from_lists(pc.utf8_split_whitespace(texts), len(texts))
    return pieces.select(np.asarray(pc.utf8_length(pieces.values)) > 0)


def split_lines(texts: pa.Array) -> Pieces:
    """Every line (split on '\\n'), blank ones included, untrimmed."""
    return _from_lists(pc.split_pattern(texts, "\n"), len(texts))


def split_paragraphs(texts: pa.Array) -> Pieces:
    """Paragraphs: text between blank lines."""
    return _from_lists(pc.split_pattern_regex(texts, PARAGRAPH_BREAK), len(texts))


def stripped_nonblank(pieces: Pieces) -> Pieces:
    """Pieces with surrounding whitespace removed, blank ones dropped."""
    stripped = Pieces(pc.utf8_trim_whitespace(pieces.values), pieces.doc, pieces.n_docs)
    return stripped.select(stripped.lengths() > 0)


def per_doc_sum(pieces: Pieces, weights: np.ndarray | None = None) -> np.ndarray:
    """Per document: the number of pieces, or the sum of `weights` over its pieces."""
    return np.bincount(pieces.doc, weights=weights, minlength=pieces.n_docs).astype(np.float64)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (nothing to measure)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out
