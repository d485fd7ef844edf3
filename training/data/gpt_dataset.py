"""Megatron's GPTDataset on token shards: fixed-length samples packed across documents.

Three indices, all built with whole-array numpy (no per-sample Python):
- document index: the split's documents, shuffled afresh for every epoch (seeded), for as
  many epochs as the requested number of samples needs;
- sample index: row j is (position in the document index, token offset) where sample j
  starts; sample j runs to the start of sample j+1 *inclusive*, so it holds seq_len + 1
  tokens (inputs and shifted labels) and consecutive samples share exactly one token;
- shuffle index: a seeded permutation of the samples, so batches mix epochs and documents.

Documents keep their EOD token, so packed samples carry EOD between documents.
"""

from __future__ import annotations

import numpy as np

from training.data.shards import SourceShards


def epochs_needed(tokens_per_epoch: int, seq_len: int, num_samples: int) -> int:
    """Smallest number of epochs whose token stream holds num_samples samples of seq_len + 1."""
    return max(1, -(-(num_samples * seq_len + 1) // tokens_per_epoch))


def samples_per_epoch(tokens_per_epoch: int, seq_len: int) -> int:
    return max(0, (tokens_per_epoch - 1) // seq_len)


def build_sample_indices(document_ids: np.ndarray, document_lengths: np.ndarray, seq_len: int,
                         num_samples: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The document, sample and shuffle indices for `num_samples` samples.

    `document_ids` are the split's documents (global numbers in the source) and
    `document_lengths` the tokens of every document of the source, indexed by those numbers.
    """
    tokens_per_epoch = int(document_lengths[document_ids].sum())
    if tokens_per_epoch < 2:
        raise ValueError("cannot build samples from fewer than 2 tokens")
    epochs = epochs_needed(tokens_per_epoch, seq_len, num_samples)
    document_ids = np.asarray(document_ids, dtype=np.int64)
    doc_idx = np.concatenate([rng.permutation(document_ids) for _ in range(epochs)])
    ends = np.cumsum(document_lengths[doc_idx], dtype=np.int64)
    starts = np.arange(num_samples + 1, dtype=np.int64) * seq_len
    position = np.searchsorted(ends, starts, side="right")  # document holding each start
    offset = starts - (ends[position] - document_lengths[doc_idx[position]])
    sample_idx = np.stack([position, offset], axis=1)
    shuffle_idx = rng.permutation(num_samples).astype(np.int64)
    return {"doc_idx": doc_idx, "sample_idx": sample_idx, "shuffle_idx": shuffle_idx}


class GPTDataset:
    """`dataset[i]`: the i-th shuffled sample, int64 array of seq_len + 1 tokens."""

    def __init__(self, shards: SourceShards, indices: dict[str, np.ndarray], seq_len: int):
        self.shards = shards
        self.seq_len = seq_len
        self.doc_idx = indices["doc_idx"]
        self.sample_idx = indices["sample_idx"]
        self.shuffle_idx = indices["shuffle_idx"]

    def __len__(self) -> int:
        return len(self.shuffle_idx)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.packed(int(self.shuffle_idx[i]))

    def packed(self, j: int) -> np.ndarray:
        """Sample j of the unshuffled stream: tokens from sample start j to start j+1 inclusive."""
        (first, start), (last, stop) = self.sample_idx[j], self.sample_idx[j + 1]
        documents = self.doc_idx[first:last + 1]
        if first == last:
            return self.shards.document(int(documents[0]))[start:stop + 1].astype(np.int64)
        pieces = [self.shards.document(int(d)) for d in documents]
        pieces[0] = pieces[0][start:]
        pieces[-1] = pieces[-1][:stop + 1]
        return np.concatenate(pieces).astype(np.int64, copy=False)
