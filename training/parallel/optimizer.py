"""The trainer's optimizer: AdamW over the DP gradient buckets, plain (ZeRO stage 0: all-reduced
gradients, full state on every rank) or distributed (stages 1 to 3, as Megatron-LM's
`--use-distributed-optimizer` and DeepSpeed's ZeRO).

Distributed, the fp32 master weights and Adam's moments live only for this DP rank's shard of
every gradient bucket, so optimizer state per rank is 1/dp of the whole. A step is: gradients
reduce-scattered (GradBuckets), the global norm summed over every rank's distinct elements,
AdamW on the local shard of the master weights, the shard copied into the model's (bf16 or
fp32) parameters, then the updated shards all-gathered back into every replica (stage 3: not
gathered; each layer gathers its parameters when it runs, zero3.py).

Mixed precision (`dtype: bf16`, the ZeRO paper's model): parameters and gradients are bf16,
the master weights a separate fp32 copy of this rank's shard. With `dtype: fp32` the flat
parameter buffer is itself the master copy, so nothing is duplicated.

Which elements decay and which count in the norm is kept per *segment* (a run of one
parameter's elements inside this rank's shard), not as masks over the whole model.

A step whose global gradient norm or loss is NaN or Inf is skipped (no update, Adam's step
count unchanged), as Megatron's fp16 loss scaler skips an overflowing iteration: the norm is
all-reduced and the loss is the DP mean, so every rank takes the same decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from training.config import OptimConfig
from training.optim import adamw_update, clip_coefficient, decays
from training.parallel import comm
from training.parallel.grad_buckets import GradBuckets


class NonFiniteStepsError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm: training stopped."""


@dataclass(frozen=True)
class Segment:
    """Elements [lo, hi) of the flat buffers, inside bucket `bucket`'s local range, all of
    `param`; `state` is where they start in this rank's optimizer state."""

    param: nn.Parameter = field(compare=False, repr=False)
    bucket: int
    lo: int
    hi: int
    state: int
    decay: bool
    counted: bool


def plan_segments(buckets: GradBuckets, counts_in_norm) -> list[Segment]:
    """The pieces of every parameter that fall in this rank's local ranges, in flat order."""
    segments, cursor = [], 0
    by_offset = sorted(buckets.offsets.items(), key=lambda item: item[1])
    for index in range(len(buckets.buckets)):
        lo, hi = buckets.local_range(index)
        for param, offset in by_offset:
            a, b = max(lo, offset), min(hi, offset + param.numel())
            if a < b:
                segments.append(Segment(param, index, a, b, cursor + a - lo, decays(param),
                                        counts_in_norm(param)))
        cursor += hi - lo
    return segments


class DistributedOptimizer:
    def __init__(self, buckets: GradBuckets, cfg: OptimConfig, *, counts_in_norm, norm_group):
        """`counts_in_norm(param)` says whether this rank counts the parameter in the global
        norm (each distinct weight once); `norm_group` spans the ranks whose gradients are
        distinct: model-parallel ranks, and DP ranks too when the gradients are sharded."""
        self.buckets, self.cfg, self.norm_group = buckets, cfg, norm_group
        self.segments = plan_segments(buckets, counts_in_norm)
        self.local_numel = sum(hi - lo for lo, hi in map(buckets.local_range,
                                                         range(len(buckets.buckets))))
        device = buckets.device
        self.exp_avg = torch.zeros(self.local_numel, device=device)
        self.exp_avg_sq = torch.zeros(self.local_numel, device=device)
        # fp32 master weights of this rank's shard, when the model's parameters are not fp32.
        self.master = (torch.zeros(self.local_numel, device=device)
                       if buckets.dtype != torch.float32 else None)
        self.load_master_from_params()
        self.steps = 0
        self.last_step_skipped = False

    def load_master_from_params(self) -> None:
        """Master weights := this rank's shard of the model's parameters (at start)."""
        if self.master is not None:
            for seg in self.segments:
                self.master_of(seg).copy_(self.params_of(seg))

    def store_master_in_params(self) -> None:
        """This rank's shard of the model's parameters := its master weights (after loading
        them, or after an update)."""
        if self.master is not None:
            for seg in self.segments:
                self.params_of(seg).copy_(self.master_of(seg))

    def params_of(self, seg: Segment) -> torch.Tensor:
        """The model's (bf16 or fp32) parameters of a segment, in this rank's shard."""
        lo, _ = self.buckets.local_range(seg.bucket)
        return self.buckets.shard_params(seg.bucket)[seg.lo - lo: seg.hi - lo]

    def master_of(self, seg: Segment) -> torch.Tensor:
        """The fp32 master weights of a segment (a view into the parameters in fp32 runs)."""
        if self.master is None:
            return self.params_of(seg)
        return self.master[seg.state: seg.state + seg.hi - seg.lo]

    def state_of(self, seg: Segment, kind: str) -> torch.Tensor:
        return getattr(self, kind)[seg.state: seg.state + seg.hi - seg.lo]

    def grad_of(self, seg: Segment) -> torch.Tensor:
        lo, _ = self.buckets.local_range(seg.bucket)
        return self.buckets.local_grad(seg.bucket)[seg.lo - lo: seg.hi - lo]

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor of optimizer state this rank holds (for memory accounting)."""
        return [t for t in (self.master, self.exp_avg, self.exp_avg_sq) if t is not None]

    def state_bytes(self) -> int:
        """Bytes of optimizer state (moments, and master weights if separate) on this rank."""
        return sum(t.numel() * t.element_size() for t in self.state_tensors())

    def grad_norm(self) -> float:
        """L2 norm of the whole model's gradient, identical on every rank."""
        local = torch.zeros((), dtype=torch.float64, device=self.exp_avg.device)
        for seg in self.segments:
            if seg.counted:
                grad = self.grad_of(seg).float()
                local += torch.dot(grad, grad).double()
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
        for seg in self.segments:
            grad = self.grad_of(seg).float()  # the buffer itself in fp32 runs
            if scale != 1.0:
                grad.mul_(scale)
            master = self.master_of(seg)
            adamw_update(master, grad, self.state_of(seg, "exp_avg"),
                         self.state_of(seg, "exp_avg_sq"), seg.decay, lr=lr, step=self.steps,
                         cfg=self.cfg)
            if self.master is not None:
                self.params_of(seg).copy_(master)
        self.buckets.gather_params()
        return norm
