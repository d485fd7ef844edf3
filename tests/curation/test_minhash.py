"""Shingles, MinHash signatures, LSH bands and exact verification, against planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curation.dedup.lsh import (
    band_hashes,
    band_ranks,
    bucket_anchor_edges,
    collision_probability,
    optimal_bands_rows,
)
from curation.dedup.minhash import CHAR, MinHasher, Shingles, estimate_jaccard, shingle_hashes
from curation.dedup.verify import decode_sets, encode_sets, pair_jaccard


def python_docs() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def word_shingles(text: str, n: int) -> set:
    words = "".join(c if c.isalnum() or c == "_" else " " for c in text.lower()).split()
    return set(zip(*[words[i:] for i in range(n)], strict=False)) if len(words) >= n else None


def char_shingles(text: str, n: int) -> set:
    norm = " ".join(text.lower().split())
    return {norm[i:i + n] for i in range(len(norm) - n + 1)} if len(norm) >= n else None


def sets_of(shingles: Shingles) -> list[np.ndarray]:
    u = shingles.unique_per_document()
    return [u.hashes[u.offsets[d]:u.offsets[d + 1]] for d in range(len(u))]


@pytest.mark.parametrize("kind,n,reference", [
    ("word", 5, word_shingles), ("word", 1, word_shingles), (CHAR, 24, char_shingles)])
def test_shingle_sets_match_a_plain_python_reading(kind, n, reference):
    docs = python_docs()[:40]
    got = sets_of(shingle_hashes(docs, n, kind))
    for text, hashes in zip(docs, got, strict=True):
        assert len(hashes) == len(reference(text, n))


def test_equal_shingles_hash_equal_and_short_documents_get_one_shingle():
    docs = ["The cat sat on the mat today", "the CAT sat, on the mat... today!", "two words",
            "Two   Words", "", "   ", "x"]
    sets = sets_of(shingle_hashes(docs, 5))
    assert np.array_equal(sets[0], sets[1])  # case and punctuation are not content
    assert len(sets[0]) == 3
    assert [len(s) for s in sets[2:]] == [1, 1, 1, 1, 1]
    assert np.array_equal(sets[2], sets[3]) and np.array_equal(sets[4], sets[5])
    assert not np.array_equal(sets[2], sets[4]) and not np.array_equal(sets[2], sets[6])


def test_signatures_do_not_depend_on_the_other_documents_in_the_batch():
    docs = python_docs()  # long documents: shingle chunks cut through many of them
    hasher = MinHasher(128, seed=7)
    together = hasher.signatures(shingle_hashes(docs, 5))
    alone = np.vstack([hasher.signatures(shingle_hashes([d], 5)) for d in docs[::9]])
    assert together.dtype == np.uint32 and together.shape == (len(docs), 128)
    assert np.array_equal(together[::9], alone)
    other_seed = MinHasher(128, seed=8).signatures(shingle_hashes(docs[:3], 5))
    assert not np.array_equal(other_seed, together[:3])


def planted_set_pairs(count: int, rng: np.random.Generator):
    """Pairs of uint64 sets with a known Jaccard spread over [0.2, 1]."""
    pairs, truth = [], []
    for _ in range(count):
        size = int(rng.integers(50, 400))
        shared = rng.integers(0, 2**63, size=size, dtype=np.uint64)
        j = rng.uniform(0.2, 1.0)
        extra = int(round(size * (1 - j) / (1 + j)))  # same number of private items each side
        left = np.concatenate([shared[extra:], rng.integers(0, 2**63, extra, dtype=np.uint64)])
        right = np.concatenate([shared[extra:], rng.integers(0, 2**63, extra, dtype=np.uint64)])
        pairs.append((np.unique(left), np.unique(right)))
        truth.append(len(np.intersect1d(left, right)) / len(np.union1d(left, right)))
    return pairs, np.array(truth)


def as_shingles(sets: list[np.ndarray]) -> Shingles:
    counts = np.array([len(s) for s in sets])
    return Shingles(np.concatenate(sets), np.concatenate([[0], np.cumsum(counts)]))


def test_jaccard_estimates_as_good_as_datasketch_minhash():
    from datasketch import MinHash

    pairs, truth = planted_set_pairs(600, np.random.default_rng(0))
    hasher = MinHasher(128, seed=1)
    left = hasher.signatures(as_shingles([a for a, _ in pairs]))
    right = hasher.signatures(as_shingles([b for _, b in pairs]))
    ours = np.abs(estimate_jaccard(left, right) - truth).mean()
    theirs = []
    for a, b in pairs:
        ma, mb = MinHash(num_perm=128, seed=1), MinHash(num_perm=128, seed=1)
        ma.update_batch([x.tobytes() for x in a])
        mb.update_batch([x.tobytes() for x in b])
        theirs.append(ma.jaccard(mb))
    theirs = np.abs(np.array(theirs) - truth).mean()
    assert ours <= 1.10 * theirs, (ours, theirs)
    assert ours < 0.05


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_band_choice_matches_datasketch_with_its_weights(threshold):
    from datasketch.lsh import _optimal_param

    assert optimal_bands_rows(threshold, 128, 0.5, 0.5) == _optimal_param(threshold, 128,
                                                                          0.5, 0.5)


def test_recall_weighted_band_choice_finds_more_pairs_at_the_threshold():
    balanced = optimal_bands_rows(0.8, 128, 0.5, 0.5)
    recall_first = optimal_bands_rows(0.8, 128, 0.1, 0.9)
    assert collision_probability(0.8, *recall_first) > collision_probability(0.8, *balanced)
    assert collision_probability(0.85, *recall_first) >= 0.95
    with pytest.raises(ValueError, match="threshold"):
        optimal_bands_rows(1.0, 128, 0.5, 0.5)


def test_band_hashes_change_only_in_the_band_whose_rows_change():
    rng = np.random.default_rng(2)
    sig = rng.integers(0, 2**32, size=(3, 128), dtype=np.uint64).astype(np.uint32)
    sig[1] = sig[0]
    sig[2] = sig[0]
    sig[2, 25] ^= 1  # row 25 lies in band 2 when rows = 10
    bands = band_hashes(sig, 12, 10, seed=3)
    assert bands.shape == (3, 12) and bands.dtype == np.int64
    assert np.array_equal(bands[0], bands[1])
    assert [k for k in range(12) if bands[0, k] != bands[2, k]] == [2]
    assert len(set(bands[0])) == 12  # the band index is part of the bucket key
    with pytest.raises(ValueError, match="num_perm"):
        band_hashes(sig, 13, 10, seed=3)


def test_a_bucket_of_k_documents_gives_k_minus_one_edges_to_its_anchor():
    ranks = band_ranks(np.arange(7, dtype=np.uint64) * np.uint64(977), 1)[:, 0]
    buckets = pd.DataFrame({"bucket": [5, 5, 5, 5, 9, 9, 4],
                            "doc": [10, 11, 12, 13, 20, 21, 30], "rank": ranks})
    edges = bucket_anchor_edges(buckets)
    assert len(edges) == 3 + 1
    anchor = buckets["doc"][int(np.argmin(ranks[:4]))]
    first = edges[(edges["lo"] < 20)]
    assert all(anchor in (lo, hi) for lo, hi in zip(first["lo"], first["hi"], strict=True))
    assert (edges["lo"] < edges["hi"]).all()
    shuffled = bucket_anchor_edges(buckets.sample(frac=1.0, random_state=1))
    assert sorted(map(tuple, shuffled.to_numpy())) == sorted(map(tuple, edges.to_numpy()))


def test_pair_jaccard_is_exact_and_sets_round_trip():
    pairs, truth = planted_set_pairs(50, np.random.default_rng(4))
    left = decode_sets(encode_sets(as_shingles([a for a, _ in pairs])))
    right_sets = as_shingles([b for _, b in pairs])
    assert np.array_equal(left.hashes, as_shingles([a for a, _ in pairs])
                          .unique_per_document().hashes)
    assert np.allclose(pair_jaccard(left, right_sets.unique_per_document()), truth)
    python_bytes = list(encode_sets(right_sets).to_pylist())  # as a Dask merge may hand them
    assert np.allclose(pair_jaccard(left, decode_sets(python_bytes)), truth)


def test_distinct_words_get_distinct_hashes():
    import itertools

    # Every word of 1 to 4 letters over 8 letters: anagrams, repeats and prefixes included.
    words = ["".join(p) for k in range(1, 5) for p in itertools.product("abcdefgh", repeat=k)]
    hashes = shingle_hashes([" ".join(words)], 1).hashes
    assert len(hashes) == len(words) == len(np.unique(hashes))
