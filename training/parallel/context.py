"""Context parallelism's attention core: ring attention with Megatron's causal load balancing.

Each of the `cp` ranks holds a slice of every sequence: cut into 2·cp chunks, rank r holds
chunks r and 2·cp−1−r, so under a causal mask every rank has the same amount of work (an
early chunk sees few keys, its mirror many). Attention passes K/V around the CP ring: at step
j a rank attends its queries to the block that started on rank r − j, and merges the partial
results with an online softmax (each block's output weighted by exp(its log-sum-exp − the
running one)). The ring shift is an autograd function over comm's p2p ops, so the backward
runs the reverse ring and each block's K/V gradient travels back to its owner.

Memory: each rank's attention scores are cp blocks of (seq/cp)² — 1/cp of one process's.
Autograd keeps every K/V block a rank received for its backward (the whole sequence's K/V,
as an all-gather would); a fused kernel that recomputes them in a backward ring would not.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from training.parallel import comm

MASKED = -1e30  # finite, so a row with no visible key has weight exp(-1e30 - lse) = 0


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
    """A `MicroBatch` (inputs, targets [batch, seq]) cut to this CP rank's slice; document
    masks do not combine with CP (a config error)."""
    cp, rank = grid.layout.cp, grid.cp_rank
    if cp == 1:
        return micro
    return replace(micro, inputs=slice_sequence(micro.inputs, cp, rank),
                   targets=slice_sequence(micro.targets, cp, rank))


class _RingShift(torch.autograd.Function):
    """Forward: send to the next CP rank, receive from the previous. Backward: the reverse."""

    @staticmethod
    def forward(ctx, x, group, next_rank: int, prev_rank: int):
        ctx.group, ctx.next_rank, ctx.prev_rank = group, next_rank, prev_rank
        return _exchange(x, group, send_to=next_rank, recv_from=prev_rank)

    @staticmethod
    def backward(ctx, grad):
        return _exchange(grad, ctx.group, send_to=ctx.prev_rank, recv_from=ctx.next_rank), \
            None, None, None


def _exchange(x: torch.Tensor, group, send_to: int, recv_from: int) -> torch.Tensor:
    x = x.contiguous()
    received = torch.empty_like(x)
    sends, recvs = comm.post_p2p([(x, send_to)], [(received, recv_from)], group)
    for pending in sends + recvs:
        comm.wait(pending)
    return received


def _block(q, k, v, visible, scale):
    """Attention of q to one K/V block: (output, log-sum-exp) over its visible keys."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale
    scores = scores.masked_fill(~visible, MASKED)
    lse = torch.logsumexp(scores, dim=-1)
    return torch.matmul(torch.softmax(scores, dim=-1), v), lse


class RingAttention:
    """A causal attention core (training/blocks.py's `AttentionCore`) over a CP group:
    q, k, v [batch, heads, local_seq, head_dim] are this rank's load-balanced slice."""

    def __init__(self, group, ranks: list[int], cp_rank: int):
        self.group, self.ranks, self.cp_rank, self.cp = group, ranks, cp_rank, len(ranks)

    def __call__(self, q, k, v, dropout: float = 0.0, mask=None) -> torch.Tensor:
        if mask is not None:
            raise ValueError("ring attention keeps the causal mask only (documents kept apart "
                             "do not combine with parallel.cp > 1)")
        if dropout:
            raise ValueError("ring attention has no attention dropout (model.dropout must be 0 "
                             "with parallel.cp > 1)")
        cp, rank = self.cp, self.cp_rank
        seq_len = q.shape[2] * cp
        q_pos = load_balanced_positions(seq_len, cp, rank, q.device)
        scale = q.shape[-1] ** -0.5
        next_rank, prev_rank = self.ranks[(rank + 1) % cp], self.ranks[(rank - 1) % cp]
        out = lse = None
        kv = torch.stack([k, v])
        for step in range(cp):
            if step:
                kv = _RingShift.apply(kv, self.group, next_rank, prev_rank)
            k_pos = load_balanced_positions(seq_len, cp, (rank - step) % cp, q.device)
            visible = q_pos[:, None] >= k_pos[None, :]
            if not visible.any():
                continue
            block_out, block_lse = _block(q, kv[0], kv[1], visible, scale)
            if out is None:
                out, lse = block_out, block_lse
                continue
            merged = torch.logaddexp(lse, block_lse)
            out = out * (lse - merged).exp().unsqueeze(-1) \
                + block_out * (block_lse - merged).exp().unsqueeze(-1)
            lse = merged
        return out.to(q.dtype)
