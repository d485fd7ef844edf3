"""Model-free document features for selection: hashed word uni- and bigrams, token counts.

Both GOT-D's embeddings and DSIR's importance weights are built from the same hashed
n-grams (the words and n-gram hashes of curation/decontam/ngrams.py, so every text is
split and hashed once, vectorised over the batch):

- `hashed_embeddings`: signed feature hashing of unigrams and bigrams into `dims`
  buckets, log(1 + |count|) damped, L2-normalised. Squared Euclidean distance between two
  such vectors is 2 - 2·cosine, in [0, 4], which bounds the OT cost matrix.
- `bucket_totals` / `bucket_log_weights`: DSIR's hashed bag-of-n-grams (Xie et al.
  2023, §3: hashed unigrams and bigrams, 10k buckets by default) and the log importance
  weight it gives a text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.decontam.ngrams import hash_words, ngram_hashes
from curation.hashing import splitmix64

TOKEN_PATTERN = r"\w+|[^\w\s]"  # words and punctuation marks: a tokenizer-free token count


def token_counts(texts: Sequence[str]) -> np.ndarray:
    """Approximate tokens per text (words plus punctuation marks), before any tokenizer
    exists: the tokenizer is trained after selection."""
    if len(texts) == 0:
        return np.zeros(0, dtype=np.int64)
    counts = pc.count_substring_regex(pa.array(list(texts), type=pa.string()), TOKEN_PATTERN)
    return counts.to_numpy(zero_copy_only=False).astype(np.int64)


def _ngram_features(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hash, text index) of every unigram and bigram of every text."""
    words = hash_words(texts)
    text_of_word = np.repeat(np.arange(len(texts)), words.counts)
    bigrams, starts = ngram_hashes(words, 2)
    hashes = np.concatenate([splitmix64(words.hashes), bigrams])
    owners = np.concatenate([text_of_word, text_of_word[starts]])
    return hashes, owners


def bucket_totals(texts: Sequence[str], buckets: int) -> np.ndarray:
    """Counts of hashed unigrams and bigrams over all `texts`, per bucket (float64)."""
    hashes, _ = _ngram_features(texts)
    buckets_of = (hashes % np.uint64(buckets)).astype(np.int64)
    return np.bincount(buckets_of, minlength=buckets).astype(np.float64)


def bucket_log_weights(texts: Sequence[str], log_ratio: np.ndarray) -> np.ndarray:
    """Per text, Σ over its hashed n-grams of log_ratio[bucket]: DSIR's log importance
    weight. Summed n-gram by n-gram in text order, so a text's value is bit-identical
    whatever batch it is in."""
    hashes, owners = _ngram_features(texts)
    weights = log_ratio[(hashes % np.uint64(len(log_ratio))).astype(np.int64)]
    return np.bincount(owners, weights=weights, minlength=len(texts))


def hashed_embeddings(texts: Sequence[str], dims: int) -> np.ndarray:
    """(len(texts), dims) float32 unit vectors (a text without words is all zeros)."""
    hashes, owners = _ngram_features(texts)
    cells = owners * dims + (hashes % np.uint64(dims)).astype(np.int64)
    signs = np.where((hashes >> np.uint64(63)) == 1, -1.0, 1.0)
    flat = np.bincount(cells, weights=signs, minlength=len(texts) * dims)
    vectors = flat.reshape(len(texts), dims)
    vectors = np.sign(vectors) * np.log1p(np.abs(vectors))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def uniform_keys(ids: Sequence[str], seed: int) -> np.ndarray:
    """A uniform (0, 1) number per document, a function of (seed, id) only: the same on
    any number of workers or partitions."""
    import pandas as pd

    h = pd.util.hash_array(np.asarray(list(ids), dtype=object)).astype(np.uint64)
    h = splitmix64(h ^ splitmix64(np.array([seed & (2**64 - 1)], dtype=np.uint64)))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def gumbel_noise(ids: Sequence[str], seed: int) -> np.ndarray:
    """Standard Gumbel noise per document from `uniform_keys` (for Gumbel top-k)."""
    return -np.log(-np.log(uniform_keys(ids, seed)))
