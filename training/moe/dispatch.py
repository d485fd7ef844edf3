"""The token dispatcher's communication (Liu et al., 2025, sec. 4: the token-level dispatcher
that works dropless with dynamic shapes): each collective an autograd function whose backward
is its adjoint, so gradients retrace the tokens' path.

    all_to_all_v     EP: rows to the ranks owning their experts; back by the swapped splits
    all_gather_v     ETP: every rank of an expert's shard group gets all its tokens;
                     backward reduce_scatter_v (each source gets the sum of its rows' grads)
    reduce_scatter_v ETP: the partial FFN outputs summed and returned to their source
    split_tokens     TP without sequence parallelism: TP ranks hold the same tokens, so each
                     routes only its 1/tp share (backward all-gathers the gradients);
    gather_tokens    its inverse after the experts (backward keeps this rank's share)
    sum_statistics   the router statistics summed over the ranks holding one micro-batch

Row counts differ per rank and step (dropless), so the split sizes are exchanged first
(`exchange_counts`) and every message carries exactly its rows. `A2A_CLOCK` accumulates the
time spent in the token all-to-alls (metrics.py reports it per step).
"""

from __future__ import annotations

import torch

from training.parallel import comm

A2A_CLOCK = comm.CommClock()


def _all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group):
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    with A2A_CLOCK.timing(x.device):
        comm.all_to_all(out, x.contiguous(), out_splits, in_splits, group)
    return out


class _AllToAllV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group):
        ctx.splits, ctx.group = (out_splits, in_splits), group
        return _all_to_all(x, out_splits, in_splits, group)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits = ctx.splits
        return _all_to_all(grad, in_splits, out_splits, ctx.group), None, None, None


def _gather_v(x, sizes, group):
    n = len(sizes)
    return _all_to_all(x.repeat(n, *([1] * (x.dim() - 1))), sizes, [len(x)] * n, group)


def _reduce_scatter_v(x, sizes, rank, group):
    n = len(sizes)
    mine = sizes[rank]
    pieces = _all_to_all(x, [mine] * n, sizes, group)
    return pieces.view(n, mine, *x.shape[1:]).sum(0)


class _AllGatherV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes, rank, group):
        ctx.args = (sizes, rank, group)
        return _gather_v(x, sizes, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter_v(grad, *ctx.args), None, None, None


class _ReduceScatterV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sizes, rank, group):
        ctx.args = (sizes, group)
        return _reduce_scatter_v(x, sizes, rank, group)

    @staticmethod
    def backward(ctx, grad):
        sizes, group = ctx.args
        return _gather_v(grad, sizes, group), None, None, None


def all_to_all_v(x, out_splits: list[int], in_splits: list[int], group):
    if comm.group_size(group) == 1:
        return x
    return _AllToAllV.apply(x, out_splits, in_splits, group)


def all_gather_v(x, sizes: list[int], rank: int, group):
    return x if comm.group_size(group) == 1 else _AllGatherV.apply(x, sizes, rank, group)


def reduce_scatter_v(x, sizes: list[int], rank: int, group):
    return x if comm.group_size(group) == 1 else _ReduceScatterV.apply(x, sizes, rank, group)


class _SplitTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rank, group):
        ctx.group = group
        return x.chunk(comm.group_size(group))[rank].contiguous()

    @staticmethod
    def backward(ctx, grad):
        return _gather_equal(grad, ctx.group), None, None


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rank, group):
        ctx.rank, ctx.group = rank, group
        return _gather_equal(x, group)

    @staticmethod
    def backward(ctx, grad):
        return grad.chunk(comm.group_size(ctx.group))[ctx.rank].contiguous(), None, None


def _gather_equal(x, group):
    full = x.new_empty((len(x) * comm.group_size(group), *x.shape[1:]))
    comm.all_gather_into(full, x.contiguous(), group)
    return full


def split_tokens(x, rank: int, group):
    return x if comm.group_size(group) == 1 else _SplitTokens.apply(x, rank, group)


def gather_tokens(x, rank: int, group):
    return x if comm.group_size(group) == 1 else _GatherTokens.apply(x, rank, group)


class _SumStatistics(torch.autograd.Function):
    """Forward: the sum over the ranks holding one micro-batch. Backward: this rank's share
    of the gradient, times `scale`. Each rank adds the (same) auxiliary loss, and the DP x CP
    gradient average divides by cp where one micro-batch's loss was meant: `scale` = cp
    undoes that (TP ranks' router gradients are summed, not averaged)."""

    @staticmethod
    def forward(ctx, stats, group, scale):
        ctx.scale = scale
        return comm.all_reduce(stats.clone(), group)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None, None


def sum_statistics(stats, group, scale: float):
    if comm.group_size(group) == 1:
        return stats
    return _SumStatistics.apply(stats, group, scale)


def exchange_counts(counts: torch.Tensor, ep_group, etp_group) -> torch.Tensor:
    """Per-expert row counts [E] of this rank -> [etp, ep, E/ep]: how many rows each
    (ETP source, EP source) sends to each of this rank's local experts."""
    ep, etp = comm.group_size(ep_group), comm.group_size(etp_group)
    received = counts.new_empty(counts.shape)
    comm.all_to_all(received, counts, [len(counts) // ep] * ep, [len(counts) // ep] * ep,
                    ep_group)
    gathered = received.new_empty((etp * len(received),))
    comm.all_gather_into(gathered, received, etp_group)
    return gathered.view(etp, ep, len(counts) // ep)
