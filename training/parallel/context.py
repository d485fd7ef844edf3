"""Context parallelism: which tokens a CP rank holds, and its attention core.

Each of the `cp` ranks holds a slice of every sequence: cut into 2·cp chunks, rank r holds
chunks r and 2·cp−1−r, so under a causal mask every rank has the same amount of work (an
early chunk sees few keys, its mirror many). Everything outside attention works on the local
slice; attention passes K/V around the CP ring (parallel/ring_attention.py), which keeps only
the local q, k, v, output and log-sum-exp for the backward, so K/V memory per rank is 1/cp of
one process's.

A micro-batch is cut here, after its document masks are made from the whole sequence
(training.batches): position ids and the loss mask are sliced, and a packed sample's
documents travel as per-token document ids of the whole sequence ([batch, seq], not the
[seq, seq] mask), from which ring attention builds each block's mask. With a loss mask, each
rank's loss is its masked sum over the whole micro-batch's masked tokens / cp, so the mean
over CP ranks is one process's masked mean.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from training.parallel.ring_attention import (
    Ring,
    RingAttentionFunction,
    Visibility,
    dropout_seed,
)


def chunk_ids(cp: int, rank: int) -> tuple[int, int]:
    return rank, 2 * cp - 1 - rank


def load_balanced_positions(seq_len: int, cp: int, rank: int,
                            device: torch.device | None = None) -> torch.Tensor:
    """Global positions of the tokens CP rank `rank` holds (its two chunks, in order)."""
    chunk = seq_len // (2 * cp)
    return torch.cat([torch.arange(c * chunk, (c + 1) * chunk, device=device)
                      for c in chunk_ids(cp, rank)])


def slice_sequence(x: torch.Tensor, cp: int, rank: int, dim: int = 1) -> torch.Tensor:
    """This CP rank's slice of a tensor holding whole sequences along `dim`."""
    if cp == 1:
        return x
    chunks = x.chunk(2 * cp, dim=dim)
    return torch.cat([chunks[c] for c in chunk_ids(cp, rank)], dim=dim)


def context_slice(micro, grid):
    """A `MicroBatch` cut to this CP rank's slice (see the module docstring)."""
    cp, rank = grid.layout.cp, grid.cp_rank
    if cp == 1:
        return micro
    documents = micro.documents
    if documents is not None:
        def cut(tensor):
            return None if tensor is None else slice_sequence(tensor, cp, rank)

        loss_tokens = None if documents.loss_mask is None else \
            documents.loss_mask.sum().clamp_min(1.0) / cp
        documents = replace(documents, position_ids=cut(documents.position_ids),
                            attention_mask=None, loss_mask=cut(documents.loss_mask),
                            loss_tokens=loss_tokens)
    return replace(micro, inputs=slice_sequence(micro.inputs, cp, rank),
                   targets=slice_sequence(micro.targets, cp, rank), documents=documents)


class RingAttention:
    """A causal attention core (training/blocks.py's `AttentionCore`) over a CP group:
    q [batch, heads, local_seq, head_dim] and k, v (as many heads or fewer: grouped-query)
    are this rank's load-balanced slice; `mask`, when given, is the per-token document ids of
    the whole sequence [batch, seq]."""

    def __init__(self, group, ranks: list[int], cp_rank: int):
        cp = len(ranks)
        self.ring = Ring(group, cp, cp_rank, next_rank=ranks[(cp_rank + 1) % cp],
                         prev_rank=ranks[(cp_rank - 1) % cp])

    def __call__(self, q, k, v, dropout: float = 0.0, mask=None) -> torch.Tensor:
        cp = self.ring.cp
        seq_len = q.shape[2] * cp
        visibility = Visibility([load_balanced_positions(seq_len, cp, r, q.device)
                                 for r in range(cp)], mask)
        # with dropout: one draw from the current stream (the attention's RNG region, entered
        # only when dropout is on); every block's mask derives from it
        seed = dropout_seed(q.device) if dropout else 0
        return RingAttentionFunction.apply(q, k, v, self.ring, visibility, dropout, seed)
