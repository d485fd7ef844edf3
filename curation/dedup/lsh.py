"""Locality-sensitive hashing: choose bands x rows, hash bands, turn buckets into edges.

Two documents whose signatures agree on all `rows` positions of any of `bands` bands
land in the same bucket. With Jaccard s, that happens with probability
1 - (1 - s^rows)^bands: the S-curve whose knee the (bands, rows) choice places.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.hashing import splitmix64

_GRID = 1001  # points of the trapezoid integrals over s in [0, 1]


def collision_probability(similarity, bands: int, rows: int) -> np.ndarray:
    """P(two documents with Jaccard `similarity` share at least one band bucket)."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


def optimal_bands_rows(
    threshold: float, num_perm: int, false_positive_weight: float, false_negative_weight: float
) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted error mass.

    False positives: the collision probability integrated below `threshold`; false
    negatives: the miss probability integrated above it. With verification on, a false
    positive only costs one exact Jaccard, while a false negative is a duplicate kept, so
    the stage weighs misses more by default.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"fuzzy_dedup: threshold must be in (0, 1), got {threshold}")
    s = np.linspace(0.0, 1.0, _GRID)
    below, above = s <= threshold, s >= threshold
    best, best_error = (1, 1), np.inf
    for rows in range(1, num_perm + 1):
        bands = np.arange(1, num_perm // rows + 1)
        p = collision_probability(s[None, :], bands[:, None], rows)
        fp = np.trapezoid(np.where(below, p, 0.0), s, axis=1)
        fn = np.trapezoid(np.where(above, 1.0 - p, 0.0), s, axis=1)
        error = false_positive_weight * fp + false_negative_weight * fn
        i = int(np.argmin(error))
        if error[i] < best_error - 1e-12:
            best, best_error = (int(bands[i]), rows), float(error[i])
    return best


def band_hashes(signatures: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """int64 array (documents, bands): one hash per band, salted by the band's index.

    The band index is mixed in so that one (bucket) key names both the band and its
    values: equal keys in different bands would be a 2^-64 accident.
    """
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"fuzzy_dedup: bands*rows = {bands * rows} exceeds num_perm {num_perm}")
    grid = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    salt = splitmix64(np.arange(bands, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(
        0x100000001))
    h = np.broadcast_to(salt, (n, bands)).copy()
    for j in range(rows):
        h = splitmix64(h ^ grid[:, :, j])
    return h.view(np.int64)


def band_ranks(id_hashes: np.ndarray, bands: int) -> np.ndarray:
    """int64 array (documents, bands): the order in which a band's bucket picks its anchor.

    A different order per band gives a bucket shared in several bands different anchors,
    so a pair that fails verification against one anchor still meets in another band.
    """
    salted = id_hashes.astype(np.uint64)[:, None] ^ splitmix64(np.arange(bands, dtype=np.uint64))
    return splitmix64(salted).view(np.int64)


def bucket_anchor_edges(buckets: pd.DataFrame) -> pd.DataFrame:
    """Edges member -> anchor for every bucket with two or more documents.

    `buckets` has columns bucket, doc, rank (all int64): all rows of a bucket must be in
    this frame (it is one shuffle partition). The anchor is the member with the smallest
    rank (a hash of the document id and the band), so the edges do not depend on how the corpus was
    partitioned. A bucket of k documents yields k - 1 edges, not k(k - 1)/2.
    """
    bucket, rank, doc = (buckets[c].to_numpy(np.int64) for c in ("bucket", "rank", "doc"))
    # Most buckets hold one document: drop those with one sort of the bucket column, so
    # the three-key sort runs on the few rows that can make an edge.
    order = np.argsort(bucket)
    same = bucket[order][1:] == bucket[order][:-1]
    shared = np.zeros(len(order), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    rows = order[shared]
    rows = rows[np.lexsort((doc[rows], rank[rows], bucket[rows]))]
    bucket, doc = bucket[rows], doc[rows]
    is_first = np.ones(len(bucket), dtype=bool)
    is_first[1:] = bucket[1:] != bucket[:-1]
    anchor = doc[np.maximum.accumulate(np.where(is_first, np.arange(len(doc)), 0))]
    member = ~is_first
    lo = np.minimum(doc[member], anchor[member])
    hi = np.maximum(doc[member], anchor[member])
    edges = pd.DataFrame({"lo": lo, "hi": hi})
    return edges[edges["lo"] != edges["hi"]].drop_duplicates(ignore_index=True)
