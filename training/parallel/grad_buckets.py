"""Data parallelism: parameters and gradients packed into flat buffers cut into buckets, and
each bucket's gradients reduced over the DP group as soon as its last gradient is ready.

Reducing per bucket (not per tensor) sends few large messages; starting during the backward
of the last micro-batch overlaps communication with the rest of the backward. With ZeRO-1 a
bucket is reduce-scattered instead of all-reduced: DP rank r receives the averaged gradients
of the r-th 1/dp of every bucket, the part its optimizer shard updates (see zero.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.parallel import comm


@dataclass
class Bucket:
    index: int
    start: int  # offset in the flat buffers
    end: int  # exclusive; (end - start) is a multiple of dp
    size: int  # parameters in the bucket
    pending: int = 0
    handle: object = None
    launched: bool = False

    def shard(self, rank: int, parts: int) -> tuple[int, int]:
        step = (self.end - self.start) // parts
        return self.start + rank * step, self.start + (rank + 1) * step


class GradBuckets:
    """Flat fp32 parameter and gradient storage for `params`, reduced over `dp_group`.

    After construction every parameter's `.data` and `.grad` are views into `self.params` and
    `self.grads`, so autograd accumulates micro-batch gradients straight into the buckets.
    """

    def __init__(self, params: list[nn.Parameter], dp_group, *, dp_rank: int, bucket_mb: float,
                 shard: bool):
        self.group, self.dp = dp_group, comm.group_size(dp_group)
        self.dp_rank, self.sharded = dp_rank, shard and self.dp > 1
        device = params[0].device
        # Backward produces gradients roughly in reverse order of the forward.
        ordered = list(reversed(params))
        self.buckets: list[Bucket] = []
        self.offsets: dict[nn.Parameter, int] = {}
        self._bucket_of: dict[nn.Parameter, Bucket] = {}
        limit = max(1, int(bucket_mb * 2**20 / 4))
        start = cursor = 0
        members: list[nn.Parameter] = []
        for i, param in enumerate(ordered):
            self.offsets[param] = cursor
            cursor += param.numel()
            members.append(param)
            if cursor - start >= limit or i == len(ordered) - 1:
                end = start + -(-(cursor - start) // self.dp) * self.dp
                bucket = Bucket(len(self.buckets), start, end, len(members))
                self.buckets.append(bucket)
                self._bucket_of.update({p: bucket for p in members})
                start = cursor = end
                members = []
        self.numel = start
        self.params = torch.zeros(self.numel, dtype=torch.float32, device=device)
        self.grads = torch.zeros_like(self.params)
        for param, offset in self.offsets.items():
            view = self.params[offset: offset + param.numel()].view_as(param)
            view.copy_(param.data)
            param.data = view
            param.grad = self.grads[offset: offset + param.numel()].view_as(param)
        shard_sizes = [(b.end - b.start) // self.dp if self.sharded else b.end - b.start
                       for b in self.buckets]
        self.local_grads = (torch.zeros(sum(shard_sizes), device=device) if self.sharded
                            else self.grads)
        self._local_starts = [sum(shard_sizes[:i]) for i in range(len(self.buckets))]
        self._syncing = False
        if self.dp > 1:
            for param in params:
                param.register_post_accumulate_grad_hook(self._on_grad_ready)

    def local_range(self, index: int) -> tuple[int, int]:
        """The flat-buffer range of bucket `index` that this rank's optimizer updates."""
        bucket = self.buckets[index]
        return bucket.shard(self.dp_rank, self.dp) if self.sharded else (bucket.start, bucket.end)

    def local_grad(self, index: int) -> torch.Tensor:
        """This rank's reduced gradients for `local_range(index)`."""
        if not self.sharded:
            bucket = self.buckets[index]
            return self.grads[bucket.start: bucket.end]
        lo, hi = self.local_range(index)
        start = self._local_starts[index]
        return self.local_grads[start: start + hi - lo]

    def zero_grad(self) -> None:
        self.grads.zero_()

    def start_grad_sync(self) -> None:
        """Call before the last micro-batch's backward: buckets reduce as they fill."""
        self._syncing = True
        for bucket in self.buckets:
            bucket.pending, bucket.launched, bucket.handle = bucket.size, False, None

    def _on_grad_ready(self, param: nn.Parameter) -> None:
        if not self._syncing:
            return
        bucket = self._bucket_of[param]
        bucket.pending -= 1
        if bucket.pending == 0:
            self._launch(bucket)

    def _launch(self, bucket: Bucket) -> None:
        grads = self.grads[bucket.start: bucket.end]
        grads.div_(self.dp)  # sum of averages = average; gloo has no AVG op
        if self.sharded:
            bucket.handle = comm.reduce_scatter_async(self.local_grad(bucket.index), grads,
                                                      self.group)
        else:
            bucket.handle = comm.all_reduce_async(grads, self.group)
        bucket.launched = True

    def finish_grad_sync(self) -> None:
        """Reduce what the hooks did not start (unused parameters) and wait for all."""
        self._syncing = False
        if self.dp == 1:
            return
        for bucket in self.buckets:
            if not bucket.launched:
                self._launch(bucket)
        for bucket in self.buckets:
            comm.wait(bucket.handle)
            bucket.handle = None

    def gather_params(self) -> None:
        """ZeRO-1: each rank updated its shard of every bucket; all-gather the whole."""
        if not self.sharded:
            return
        for index, bucket in enumerate(self.buckets):
            lo, hi = self.local_range(index)
            comm.all_gather_into(self.params[bucket.start: bucket.end], self.params[lo:hi],
                                 self.group)
