"""Megatron's GPTDataset on token shards: fixed-length samples packed across documents.

Three indices, all built with whole-array numpy (no per-sample Python):
- document index: the split's documents, shuffled afresh for every epoch (seeded), for as
  many epochs as the requested number of samples needs;
- sample index: row j is (position in the document index, token offset) where sample j
  starts; sample j runs to the start of sample j+1 *inclusive*, so it holds seq_len + 1
  tokens (inputs and shifted labels) and consecutive samples share exactly one token;
- shuffle index: seeded permutations of blocks of one epoch's worth of samples, so batches
  mix documents; blocks (not the whole index) keep the stream prefix-stable, so a longer run
  serves the same first samples (build_sample_indices).

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
                         num_samples: int, seed: list[int],
                         previous: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The document, sample and shuffle indices for at least `num_samples` samples.

    `document_ids` are the split's documents (global numbers in the source) and
    `document_lengths` the tokens of every document of the source, indexed by those numbers.

    Prefix-stable: epoch e's document order and shuffle block b's permutation are drawn from
    generators seeded by (seed, e) and (seed, b) alone, so the first samples do not depend on
    how many are asked for. The samples come in whole shuffle blocks of one epoch's worth;
    `previous` (a result for the same documents and seed) is extended, not rebuilt: only the
    new epochs, sample rows and blocks are computed, and the result starts with its arrays.
    """
    document_ids = np.asarray(document_ids, dtype=np.int64)
    tokens_per_epoch = int(document_lengths[document_ids].sum())
    if tokens_per_epoch < 2:
        raise ValueError("cannot build samples from fewer than 2 tokens")
    block = max(1, samples_per_epoch(tokens_per_epoch, seq_len))
    capacity = -(-num_samples // block) * block
    if previous is not None and len(previous["shuffle_idx"]) >= capacity:
        return previous
    old = {"doc_idx": np.zeros(0, np.int64), "sample_idx": np.zeros((0, 2), np.int64),
           "shuffle_idx": np.zeros(0, np.int64)} if previous is None else previous
    old_epochs = len(old["doc_idx"]) // len(document_ids)
    doc_idx = np.concatenate([old["doc_idx"]] + [
        np.random.default_rng([*seed, 0, e]).permutation(document_ids)
        for e in range(old_epochs, epochs_needed(tokens_per_epoch, seq_len, capacity))])
    new_rows = _sample_rows(doc_idx, document_lengths, len(document_ids), tokens_per_epoch,
                            seq_len, len(old["sample_idx"]), capacity)
    shuffle_idx = np.concatenate([old["shuffle_idx"]] + [
        b * block + np.random.default_rng([*seed, 1, b]).permutation(block)
        for b in range(len(old["shuffle_idx"]) // block, capacity // block)])
    return {"doc_idx": doc_idx, "sample_idx": np.concatenate([old["sample_idx"], new_rows]),
            "shuffle_idx": shuffle_idx.astype(np.int64)}


def _sample_rows(doc_idx, document_lengths, docs_per_epoch: int, tokens_per_epoch: int,
                 seq_len: int, first: int, last: int) -> np.ndarray:
    """Rows first..last (inclusive) of the sample index: (position in doc_idx, offset) where
    sample j starts, token j * seq_len of the stream. Only the epochs from the one holding
    sample `first` on are summed, since every epoch holds tokens_per_epoch tokens."""
    epoch = first * seq_len // tokens_per_epoch
    tail = doc_idx[epoch * docs_per_epoch:]
    ends = epoch * tokens_per_epoch + np.cumsum(document_lengths[tail], dtype=np.int64)
    starts = np.arange(first, last + 1, dtype=np.int64) * seq_len
    position = np.searchsorted(ends, starts, side="right")  # document holding each start
    offset = starts - (ends[position] - document_lengths[tail[position]])
    return np.stack([position + epoch * docs_per_epoch, offset], axis=1)


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
