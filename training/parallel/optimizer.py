"""The trainer's optimizer: AdamW over the DP gradient buckets, plain (all-reduced gradients,
full state on every rank) or, with `parallel.zero1`, distributed (ZeRO stage 1, as Megatron-LM's
`--use-distributed-optimizer`).

Distributed, Adam's moments live only for this DP rank's shard of every gradient bucket, so
optimizer state per rank is 1/dp of the whole. A step is: gradients reduce-scattered
(GradBuckets), the global norm summed over every rank's distinct elements, AdamW on the local
shard of the fp32 master weights, then the updated shards all-gathered back into every replica.

Master weights are the flat fp32 parameter buffer itself: parameters stay fp32 and bf16 comes
from autocast, so there is no second copy to keep in sync.

A step whose global gradient norm or loss is NaN or Inf is skipped (no update, Adam's step
count unchanged), as Megatron's fp16 loss scaler skips an overflowing iteration: the norm is
all-reduced and the loss is the DP mean, so every rank takes the same decision.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from training.config import OptimConfig
from training.optim import adamw_update, clip_coefficient, decays, flat_mask
from training.parallel import comm
from training.parallel.grad_buckets import GradBuckets


class NonFiniteStepsError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm: training stopped."""


class DistributedOptimizer:
    def __init__(self, buckets: GradBuckets, cfg: OptimConfig, *, counts_in_norm, norm_group):
        """`counts_in_norm(param)` says whether this rank counts the parameter in the global
        norm (each distinct weight once); `norm_group` spans the ranks whose gradients are
        distinct: model-parallel ranks, and DP ranks too when the gradients are sharded."""
        self.buckets, self.cfg, self.norm_group = buckets, cfg, norm_group
        params = list(buckets.offsets)
        device = buckets.params.device
        decay = flat_mask(params, buckets.offsets, buckets.numel, decays, device)
        counted = flat_mask(params, buckets.offsets, buckets.numel, counts_in_norm, device)
        # Per bucket: (param shard, grad shard, m, v, decay mask, norm mask or None = all).
        self.segments = []
        self.local_numel = sum(hi - lo for lo, hi in map(buckets.local_range,
                                                         range(len(buckets.buckets))))
        self.exp_avg = torch.zeros(self.local_numel, device=device)
        self.exp_avg_sq = torch.zeros(self.local_numel, device=device)
        cursor = 0
        for index in range(len(buckets.buckets)):
            lo, hi = buckets.local_range(index)
            state = slice(cursor, cursor + hi - lo)
            counted_here = None if bool(counted[lo:hi].all()) else counted[lo:hi]
            self.segments.append((buckets.params[lo:hi], buckets.local_grad(index),
                                  self.exp_avg[state], self.exp_avg_sq[state],
                                  decay[lo:hi], counted_here))
            cursor += hi - lo
        self.steps = 0
        self.last_step_skipped = False

    def state_bytes(self) -> int:
        """Bytes of Adam state held by this rank."""
        return (self.exp_avg.numel() + self.exp_avg_sq.numel()) * self.exp_avg.element_size()

    def grad_norm(self) -> float:
        """L2 norm of the whole model's gradient, identical on every rank."""
        local = torch.zeros((), dtype=torch.float64, device=self.exp_avg.device)
        for _, grad, _, _, _, counted in self.segments:
            local += torch.dot(grad if counted is None else grad * counted, grad).double()
        comm.all_reduce(local, self.norm_group, op=dist.ReduceOp.SUM)
        return math.sqrt(local.item())

    def step(self, lr: float, loss: float = 0.0) -> float:
        """Clip, update the local shard, gather parameters; returns the pre-clip grad norm.
        `loss` must be the same on every rank (the DP mean). If it or the norm is not finite,
        nothing is updated and `last_step_skipped` is set."""
        norm = self.grad_norm()
        self.last_step_skipped = not (math.isfinite(norm) and math.isfinite(loss))
        if self.last_step_skipped:
            return norm
        scale = clip_coefficient(norm, self.cfg.clip)
        self.steps += 1
        for param, grad, exp_avg, exp_avg_sq, decay, _ in self.segments:
            if scale != 1.0:
                grad.mul_(scale)
            adamw_update(param, grad, exp_avg, exp_avg_sq, decay, lr=lr, step=self.steps,
                         cfg=self.cfg)
        self.buckets.gather_params()
        return norm
