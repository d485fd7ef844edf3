"""Megatron-LM tensor parallelism: the two conjugate communication functions, the column- and
row-parallel linears, the vocabulary-parallel embedding and the vocabulary-parallel
cross-entropy. Each piece of communication sits next to the math it serves.

With sequence parallelism (Megatron, 2022) the activations between the linears are sharded
along the sequence over TP: `f` / `g` become an all-gather before a column-parallel linear and
a reduce-scatter after a row-parallel one (the same bytes as one all-reduce), so LayerNorm and
dropout run on 1/tp of the tokens. Tensors are [batch, seq, hidden]; the shard is along dim 1.

Weights are initialised identically for every TP: each rank draws the *full* weight from a
generator seeded by (seed, global parameter name) and keeps its slice, so a model is the same
function at TP=1 and TP=8. Every parameter carries its placement record (parallel/placement.py:
the dimension split over TP, or replicated over TP), which gathering, gradient reduction, norm
counting and checkpoints read.
"""

from __future__ import annotations

import zlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from training.parallel import comm
from training.parallel.placement import amend, place, tensor_parallel


def seeded_normal(shape: tuple[int, ...], std: float, seed: int, name: str) -> torch.Tensor:
    """The full-size initial weight of parameter `name`: the same on every rank and layout."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return torch.randn(shape, generator=generator) * std


def shard(full: torch.Tensor, dim: int, rank: int, parts: int) -> torch.Tensor:
    return full.chunk(parts, dim=dim)[rank].contiguous()


def tp_parameter(data: torch.Tensor, tp_dim: int | None) -> nn.Parameter:
    """A parameter split over TP at `tp_dim` (None: replicated over TP)."""
    return place(nn.Parameter(data), tensor_parallel(tp_dim))


class _CopyToTensorParallel(torch.autograd.Function):
    """Megatron's `f`: identity forward; the backward sums input gradients over TP, because
    each rank's partial weight only sees its share of the gradient."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x

    @staticmethod
    def backward(ctx, grad):
        return comm.all_reduce(grad.contiguous(), ctx.group), None


class _ReduceFromTensorParallel(torch.autograd.Function):
    """Megatron's `g`: the forward sums the partial outputs over TP; identity backward."""

    @staticmethod
    def forward(ctx, x, group):
        return comm.all_reduce(x.contiguous(), group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def copy_to_tensor_parallel(x: torch.Tensor, group) -> torch.Tensor:
    return x if comm.group_size(group) == 1 else _CopyToTensorParallel.apply(x, group)


def reduce_from_tensor_parallel(x: torch.Tensor, group) -> torch.Tensor:
    return x if comm.group_size(group) == 1 else _ReduceFromTensorParallel.apply(x, group)


def _gather_sequence(x: torch.Tensor, group) -> torch.Tensor:
    """[b, s/tp, h] shards -> [b, s, h], rank order along the sequence."""
    tp = comm.group_size(group)
    local = x.transpose(0, 1).contiguous()  # the collective concatenates along dim 0
    full = local.new_empty((local.shape[0] * tp, *local.shape[1:]))
    comm.all_gather_into(full, local, group)
    return full.transpose(0, 1).contiguous()


def _reduce_scatter_sequence(x: torch.Tensor, group) -> torch.Tensor:
    """[b, s, h] partial sums -> this rank's [b, s/tp, h] shard of their sum."""
    tp = comm.group_size(group)
    full = x.transpose(0, 1).contiguous()
    local = full.new_empty((full.shape[0] // tp, *full.shape[1:]))
    comm.wait(comm.reduce_scatter_async(local, full, group))
    return local.transpose(0, 1).contiguous()


class _GatherFromSequenceParallel(torch.autograd.Function):
    """SP's `f`: all-gather the sequence shards for a column-parallel linear; the backward
    reduce-scatters, summing each rank's partial input gradient and returning its shard."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather_sequence(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter_sequence(grad, ctx.group), None


class _ReduceScatterToSequenceParallel(torch.autograd.Function):
    """SP's `g`: sum a row-parallel linear's partial outputs and keep this rank's sequence
    shard; the backward all-gathers the shard gradients."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter_sequence(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _gather_sequence(grad, ctx.group), None


def gather_from_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    return x if comm.group_size(group) == 1 else _GatherFromSequenceParallel.apply(x, group)


def reduce_scatter_to_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    if comm.group_size(group) == 1:
        return x
    return _ReduceScatterToSequenceParallel.apply(x, group)


def sequence_shard(x: torch.Tensor, group, rank: int) -> torch.Tensor:
    """This rank's slice along the sequence of a tensor every TP rank holds in full."""
    return x.chunk(comm.group_size(group), dim=1)[rank]


class ColumnParallelLinear(nn.Module):
    """y = x A^T + b with A split by output rows: each rank computes its slice of y. With
    `sequence_parallel` the input arrives as a sequence shard and is all-gathered first."""

    def __init__(self, in_features, out_features, *, grid, name, seed, std,
                 sequence_parallel=False, bias=True, replicated=False):
        super().__init__()
        # `replicated`: every rank holds all output rows (grouped-query attention's KV heads
        # when fewer than tp); each rank's gradient is then partial, summed over TP.
        tp, rank = (1, 0) if replicated else (grid.layout.tp, grid.tp_rank)
        self.group, self.sequence_parallel = grid.group("tp"), sequence_parallel
        tp_dim = None if replicated else 0
        full = seeded_normal((out_features, in_features), std, seed, name + ".weight")
        self.weight = tp_parameter(shard(full, 0, rank, tp), tp_dim=tp_dim)
        self.bias = tp_parameter(torch.zeros(out_features // tp), tp_dim=tp_dim) if bias \
            else None
        if replicated and grid.layout.tp > 1:
            for param in self.parameters():
                amend(param, grad_sum="tp")

    def forward(self, x):
        if self.sequence_parallel:
            return F.linear(gather_from_sequence_parallel(x, self.group), self.weight, self.bias)
        return F.linear(copy_to_tensor_parallel(x, self.group), self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """y = x A^T + b with A split by input columns: the input arrives already split (from a
    column-parallel layer), partial outputs are summed over TP, the bias is added once. With
    `sequence_parallel` the sum is reduce-scattered: each rank keeps its sequence shard."""

    def __init__(self, in_features, out_features, *, grid, name, seed, std,
                 sequence_parallel=False, bias=True):
        super().__init__()
        tp, rank = grid.layout.tp, grid.tp_rank
        self.group, self.sequence_parallel = grid.group("tp"), sequence_parallel
        full = seeded_normal((out_features, in_features), std, seed, name + ".weight")
        self.weight = tp_parameter(shard(full, 1, rank, tp), tp_dim=1)
        self.bias = tp_parameter(torch.zeros(out_features), tp_dim=None) if bias else None

    def forward(self, x):
        if comm.group_size(self.group) == 1:
            return F.linear(x, self.weight, self.bias)
        if self.sequence_parallel:
            out = reduce_scatter_to_sequence_parallel(F.linear(x, self.weight), self.group)
        else:
            out = reduce_from_tensor_parallel(F.linear(x, self.weight), self.group)
        return out if self.bias is None else out + self.bias


class VocabParallelEmbedding(nn.Module):
    """Each rank holds a contiguous range of vocabulary rows; a token outside the range looks
    up zeros there, and the sum over TP gives every rank the full embedding (with
    `sequence_parallel`, its sequence shard of it: reduce-scatter instead of all-reduce)."""

    def __init__(self, vocab_size, hidden, *, grid, name, seed, std, sequence_parallel=False):
        super().__init__()
        tp, rank = grid.layout.tp, grid.tp_rank
        self.group, self.sequence_parallel = grid.group("tp"), sequence_parallel
        self.rows = vocab_size // tp
        self.first_row = rank * self.rows
        full = seeded_normal((vocab_size, hidden), std, seed, name + ".weight")
        self.weight = tp_parameter(shard(full, 0, rank, tp), tp_dim=0)

    def forward(self, tokens):
        if comm.group_size(self.group) == 1:
            return F.embedding(tokens, self.weight)
        local = tokens - self.first_row
        outside = (local < 0) | (local >= self.rows)
        vectors = F.embedding(local.masked_fill(outside, 0), self.weight)
        vectors = vectors.masked_fill(outside.unsqueeze(-1), 0.0)
        if self.sequence_parallel:
            return reduce_scatter_to_sequence_parallel(vectors, self.group)
        return reduce_from_tensor_parallel(vectors, self.group)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """Per-token cross-entropy from logits split over the vocabulary. Only three [tokens]-sized
    reductions cross ranks (max, sum of exponentials, target logit); the [tokens, vocab] logits
    never do. The backward is softmax - one_hot on the local slice, with no communication."""

    @staticmethod
    def forward(ctx, logits, target, group, first_row):
        ctx.logits_dtype = logits.dtype
        logits = logits.float()
        max_logit = comm.all_reduce(logits.max(dim=-1).values, group, op=dist.ReduceOp.MAX)
        shifted = logits - max_logit.unsqueeze(-1)
        rows = logits.shape[-1]
        local = target - first_row
        outside = (local < 0) | (local >= rows)
        local = local.masked_fill(outside, 0)
        target_logit = shifted.gather(-1, local.unsqueeze(-1)).squeeze(-1)
        target_logit = target_logit.masked_fill(outside, 0.0)
        exp = shifted.exp_()
        sum_exp = exp.sum(dim=-1)
        reduced = torch.stack([target_logit, sum_exp])
        comm.all_reduce(reduced, group)
        target_logit, sum_exp = reduced[0], reduced[1]
        exp.div_(sum_exp.unsqueeze(-1))
        ctx.save_for_backward(exp, local, outside)
        return sum_exp.log() - target_logit

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, local, outside = ctx.saved_tensors
        grad = softmax
        inside = (~outside).to(grad.dtype)
        grad.scatter_add_(-1, local.unsqueeze(-1), -inside.unsqueeze(-1))
        grad.mul_(grad_loss.unsqueeze(-1))
        return grad.to(ctx.logits_dtype), None, None, None


def vocab_parallel_cross_entropy(logits, target, group, first_row: int = 0) -> torch.Tensor:
    """Per-token loss [..] from this rank's logits [.., vocab / tp] starting at `first_row`."""
    if comm.group_size(group) == 1:  # the whole vocabulary is here: torch's fused kernel
        loss = F.cross_entropy(logits.float().flatten(0, -2), target.flatten(), reduction="none")
        return loss.view_as(target)
    return _VocabParallelCrossEntropy.apply(logits, target, group, first_row)
