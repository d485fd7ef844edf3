"""Shingles and MinHash signatures for a whole partition at once.

Texts are normalised (lower case; a word is a maximal run of letters, digits and '_', as
Python's `\\w`; for characters, whitespace runs become one space and the ends are
trimmed), cut into word or character n-grams, and every n-gram is hashed to 64 bits with
numpy over the code points of many documents together. A document shorter than `ngram`
units has a single shingle: the hash of its whole normalised text (so an empty or
one-word document still matches its exact copies). A signature is the minimum, per
document, of `num_perm` multiply-shift hash functions applied to all shingle hashes in
one numpy operation per chunk, reduced per document with `np.minimum.reduceat`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashing import GOLDEN_GAMMA, splitmix64

WORD = "word"
CHAR = "char"

_ROLL = GOLDEN_GAMMA  # odd multiplier that combines n-gram units
_POSITION = np.uint64(0xD6E8FEB86659FD93)  # spreads a character's position in its word
_BATCH_BYTES = 1 << 16  # text per shingling batch: its per-character arrays stay in cache
_CHUNK_ELEMENTS = 1 << 18  # shingles x permutations per numpy step (2 MiB of uint64)


@dataclass(frozen=True)
class Shingles:
    """Shingle hashes of many documents: document d owns `hashes[offsets[d]:offsets[d+1]]`."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, length documents + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def unique_per_document(self) -> Shingles:
        """The shingle *sets*: sorted, duplicates within a document removed."""
        doc = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        order = np.lexsort((self.hashes, doc))
        hashes, doc = self.hashes[order], doc[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = (hashes[1:] != hashes[:-1]) | (doc[1:] != doc[:-1])
        counts = np.bincount(doc[first], minlength=len(self))
        return Shingles(hashes[first], _offsets(counts))


def _offsets(counts: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


_BMP = 0x10000


@functools.cache
def _bmp_classes() -> tuple[np.ndarray, np.ndarray]:
    """Word-character and whitespace flags of every code point below 0x10000 (built once)."""
    chars = [chr(i) for i in range(_BMP)]
    word = np.fromiter((c.isalnum() or c == "_" for c in chars), dtype=bool, count=_BMP)
    space = np.fromiter((c.isspace() for c in chars), dtype=bool, count=_BMP)
    return word, space


def _classify(points: np.ndarray, table_index: int, test) -> np.ndarray:
    """A per-character flag: table lookup in the BMP, Python's rule per distinct rarer char."""
    flags = _bmp_classes()[table_index][np.minimum(points, _BMP - 1)]
    rare = points >= _BMP
    if rare.any():
        distinct, inverse = np.unique(points[rare], return_inverse=True)
        flags[rare] = np.array([test(chr(c)) for c in distinct], dtype=bool)[inverse]
    return flags


def _code_points(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The lower-cased texts as one array of Unicode code points, and characters per text."""
    lowered = pc.utf8_lower(texts)
    counts = pc.utf8_length(lowered).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.frombuffer(lowered.buffers()[1], dtype=np.int64)
    offsets = offsets[lowered.offset : lowered.offset + len(lowered) + 1]
    data = lowered.buffers()[2]
    utf8 = data.to_pybytes()[offsets[0] : offsets[-1]] if data is not None else b""
    points = np.frombuffer(utf8.decode("utf-8").encode("utf-32-le"), dtype=np.uint32)
    return points, counts


def _word_units(points: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hash per word (a maximal run of letters, digits and '_'), words per document.

    A word's hash mixes the wrapped sum of its characters, each first mixed with its
    position in the word: a few passes over all characters, no strings built.
    """
    word = _classify(points, 0, lambda c: c.isalnum() or c == "_")
    starts = word.copy()
    starts[1:] &= ~word[:-1]
    doc_first = _offsets(counts)[:-1][counts > 0]
    starts[doc_first] = word[doc_first]  # a word never runs across two documents
    first = np.flatnonzero(starts)
    if len(first) == 0:
        return np.empty(0, np.uint64), np.zeros(len(counts), np.int64)
    index = np.arange(len(points), dtype=np.int64)
    position = index - np.maximum.accumulate(np.where(starts, index, 0))
    values = position.view(np.uint64)
    values *= _POSITION
    values ^= points
    values *= _ROLL
    values ^= values >> np.uint64(29)  # non-linear, so no two spellings sum alike
    values *= _POSITION
    values *= word  # separators add nothing to the word they follow
    hashes = splitmix64(np.add.reduceat(values, first))
    doc = np.searchsorted(_offsets(counts)[1:], first, side="right")
    return hashes, np.bincount(doc, minlength=len(counts)).astype(np.int64)


def _char_units(points: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mixed code points with whitespace runs collapsed to one space and ends trimmed."""
    n_docs = len(counts)
    doc = np.repeat(np.arange(n_docs), counts)
    space = _classify(points, 1, str.isspace)
    solid = np.flatnonzero(~space)
    # A space survives if it is the first of its run and solid text follows in its document.
    next_solid = np.searchsorted(solid, np.arange(len(points)))
    has_next = next_solid < len(solid)
    follows = np.zeros(len(points), dtype=bool)
    follows[has_next] = doc[solid[next_solid[has_next]]] == doc[has_next]
    previous_solid = np.searchsorted(solid, np.arange(len(points))) - 1
    has_previous = previous_solid >= 0
    preceded = np.zeros(len(points), dtype=bool)
    preceded[has_previous] = doc[solid[previous_solid[has_previous]]] == doc[has_previous]
    first_space = space & ~np.concatenate([[False], space[:-1]])
    keep = ~space | (first_space & follows & preceded)
    units = np.where(space, np.uint32(ord(" ")), points)[keep]
    return splitmix64(units.astype(np.uint64)), np.bincount(doc[keep], minlength=n_docs)


def _whole_document_hashes(units: np.ndarray, counts: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """One hash of all units of each document in `docs` (for those shorter than an n-gram)."""
    offsets = _offsets(counts)
    lengths = counts[docs]
    take = np.repeat(offsets[docs], lengths) + (
        np.arange(lengths.sum()) - np.repeat(_offsets(lengths)[:-1], lengths))
    position = (take - np.repeat(offsets[docs], lengths)).astype(np.uint64)
    mixed = splitmix64(units[take] ^ splitmix64(position + np.uint64(1)))
    sums = np.zeros(len(docs), dtype=np.uint64)
    np.add.at(sums, np.repeat(np.arange(len(docs)), lengths), mixed)
    return splitmix64(sums ^ lengths.astype(np.uint64))


def shingle_hashes(texts, ngram: int, kind: str = WORD) -> Shingles:
    """The 64-bit hashes of every `ngram`-unit shingle of every text (a multiset per doc).

    Documents go through in batches of about `_BATCH_BYTES` of text, so the dozen numpy
    passes over every character run in cache rather than at memory bandwidth.
    """
    if ngram < 1:
        raise ValueError(f"fuzzy_dedup: ngram must be >= 1, got {ngram}")
    if kind not in (WORD, CHAR):
        raise ValueError(f"fuzzy_dedup: shingle must be {WORD!r} or {CHAR!r}, got {kind!r}")
    array = texts if isinstance(texts, pa.Array) else pa.array(texts, type=pa.large_string())
    array = pc.fill_null(array.cast(pa.large_string()), "")
    sizes = pc.binary_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    batch_of = np.cumsum(sizes) // _BATCH_BYTES
    cuts = np.flatnonzero(np.diff(batch_of)) + 1
    bounds = [0, *cuts.tolist(), len(array)]
    parts = [_shingle_batch(array.slice(lo, hi - lo), ngram, kind)
             for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]
    if not parts:
        return Shingles(np.empty(0, np.uint64), np.zeros(1, np.int64))
    counts = np.concatenate([np.diff(p.offsets) for p in parts])
    return Shingles(np.concatenate([p.hashes for p in parts]), _offsets(counts))


def _shingle_batch(texts: pa.Array, ngram: int, kind: str) -> Shingles:
    points, char_counts = _code_points(texts)
    units, counts = (_word_units if kind == WORD else _char_units)(points, char_counts)
    starts = _offsets(counts)[:-1]
    # Roll the n-gram hash over every unit position at once (n vectorised steps).
    padded = np.concatenate([units, np.zeros(ngram, dtype=np.uint64)])
    rolled = padded[: len(units)].copy()
    for j in range(1, ngram):
        rolled *= _ROLL
        rolled += padded[j : len(units) + j]
    doc = np.repeat(np.arange(len(counts)), counts)
    position = np.arange(len(units)) - np.repeat(starts, counts)
    window_ok = position <= (counts - ngram)[doc]
    windows = splitmix64(rolled[window_ok])
    window_doc = doc[window_ok]
    # Documents shorter than one n-gram: a single shingle, the whole normalised text.
    short = np.flatnonzero(counts < ngram)
    if len(short) == 0:
        return Shingles(windows, _offsets(np.bincount(window_doc, minlength=len(counts))))
    whole = _whole_document_hashes(units, counts, short)
    all_doc = np.concatenate([window_doc, short])
    order = np.argsort(all_doc, kind="stable")
    hashes = np.concatenate([windows, whole])[order]
    return Shingles(hashes, _offsets(np.bincount(all_doc, minlength=len(counts))))


class MinHasher:
    """`num_perm` hash functions h_k(x) = (a_k * x mod 2^64) >> 32, a_k odd, from a seed.

    Multiply-shift (Dietzfelbinger et al.) is a universal family; on shingle hashes that
    are already uniformly mixed 64-bit values it estimates Jaccard as well as datasketch's
    (a*x + b) mod (2^61 - 1) (tests/test_minhash.py holds it to that), with one numpy
    multiply per (shingle, permutation) instead of a multiply, an add and a modulo.
    Keeping the top 32 bits gives signatures as wide as datasketch's.
    """

    def __init__(self, num_perm: int, seed: int):
        if num_perm < 1:
            raise ValueError(f"fuzzy_dedup: num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6D696E68]))
        self.num_perm = num_perm
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)

    def signatures(self, shingles: Shingles) -> np.ndarray:
        """uint32 array (documents, num_perm): the minimum of each hash function per document.

        Works on (num_perm, chunk) blocks so the per-document minimum runs along contiguous
        memory; the `>> 32` is applied after the minimum (it is monotone, so it commutes).
        """
        hashes, offsets = shingles.hashes, shingles.offsets
        minima = np.full((self.num_perm, len(shingles)), np.iinfo(np.uint64).max, np.uint64)
        step = max(1, _CHUNK_ELEMENTS // self.num_perm)
        buffer = np.empty((self.num_perm, step), dtype=np.uint64)
        a = self.a[:, None]
        for lo in range(0, len(hashes), step):
            hi = min(lo + step, len(hashes))
            block = buffer[:, : hi - lo]
            np.multiply(a, hashes[None, lo:hi], out=block)
            # Documents with shingles in [lo, hi) and where each one's run starts there.
            first = np.searchsorted(offsets, lo, side="right") - 1
            last = np.searchsorted(offsets, hi, side="left")
            docs = np.arange(first, last)
            docs = docs[offsets[docs + 1] > offsets[docs]]
            segment_starts = np.maximum(offsets[docs], lo) - lo
            block_minima = np.minimum.reduceat(block, segment_starts, axis=1)
            minima[:, docs] = np.minimum(minima[:, docs], block_minima)
        return (minima >> np.uint64(32)).astype(np.uint32).T.copy()


def estimate_jaccard(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Fraction of agreeing signature positions: the MinHash estimate of Jaccard similarity."""
    return np.mean(np.asarray(left) == np.asarray(right), axis=-1)
