"""Exact Jaccard similarity of candidate pairs, from stored shingle sets.

LSH only says two documents *might* be similar; verification measures |A ∩ B| / |A ∪ B|
on the shingle hash sets, so an edge under the threshold never merges two clusters. Sets
travel as one Arrow binary value per document (its sorted unique uint64 hashes), which a
Dask merge moves like any other column.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.dedup.minhash import Shingles


def encode_sets(shingles: Shingles) -> pa.Array:
    """One binary value per document: its shingle set as little-endian uint64, sorted."""
    sets = shingles.unique_per_document()
    offsets = pa.py_buffer((sets.offsets * 8).astype(np.int64))
    data = pa.py_buffer(sets.hashes.astype("<u8"))
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(sets), [None, offsets, data])


def decode_sets(values) -> Shingles:
    """The inverse of `encode_sets` for a column of binary values (Arrow or Python bytes)."""
    array = values if isinstance(values, pa.Array) else pa.array(values, type=pa.large_binary())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    array = array.cast(pa.large_binary())
    if array.null_count:
        raise ValueError("fuzzy_dedup: a candidate document has no stored shingle set")
    byte_offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)
    byte_offsets = byte_offsets[array.offset : array.offset + len(array) + 1]
    start, end = int(byte_offsets[0]), int(byte_offsets[-1])
    if (byte_offsets % 8).any():
        raise ValueError("fuzzy_dedup: a stored shingle set is not a whole number of uint64")
    hashes = np.frombuffer(array.buffers()[2], dtype="<u8", count=(end - start) // 8,
                           offset=start) if end > start else np.empty(0, dtype=np.uint64)
    return Shingles(hashes.astype(np.uint64), (byte_offsets - start) // 8)


def pair_jaccard(left: Shingles, right: Shingles) -> np.ndarray:
    """Jaccard of the i-th set of `left` with the i-th set of `right`, for all pairs at once.

    Both inputs hold sets (no repeats within a document), so after sorting all
    (pair, hash) entries together, a hash in both sets of a pair appears exactly twice
    in a row: counting those adjacent repeats counts the intersection.
    """
    if len(left) != len(right):
        raise ValueError("pair_jaccard: both sides need the same number of sets")
    n = len(left)
    left_sizes, right_sizes = np.diff(left.offsets), np.diff(right.offsets)
    pair = np.concatenate([np.repeat(np.arange(n), left_sizes),
                           np.repeat(np.arange(n), right_sizes)])
    hashes = np.concatenate([left.hashes, right.hashes])
    order = np.lexsort((hashes, pair))
    pair, hashes = pair[order], hashes[order]
    repeated = (pair[1:] == pair[:-1]) & (hashes[1:] == hashes[:-1])
    intersection = np.bincount(pair[1:][repeated], minlength=n)
    union = left_sizes + right_sizes - intersection
    return np.divide(intersection, union, out=np.zeros(n), where=union > 0)


def take_sets(sets: Shingles, index: np.ndarray) -> Shingles:
    """The sets at positions `index` (in that order), as one Shingles."""
    sizes = np.diff(sets.offsets)[index]
    starts = sets.offsets[:-1][index]
    offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.repeat(starts - offsets[:-1], sizes) + np.arange(offsets[-1], dtype=np.int64)
    return Shingles(sets.hashes[flat], offsets)


def indexed_pair_jaccard(sets: Shingles, left: np.ndarray, right: np.ndarray,
                         max_hashes: int = 1 << 23) -> np.ndarray:
    """Jaccard of sets[left[i]] with sets[right[i]] for every i, in chunks of about
    `max_hashes` shingles so memory follows the chunk, not the number of pairs."""
    sizes = np.diff(sets.offsets)
    work = np.cumsum(sizes[left] + sizes[right])
    chunk_of = work // max_hashes
    cuts = [0, *(np.flatnonzero(np.diff(chunk_of)) + 1).tolist(), len(left)]
    parts = [pair_jaccard(take_sets(sets, left[a:b]), take_sets(sets, right[a:b]))
             for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
    return np.concatenate(parts) if parts else np.zeros(0)
