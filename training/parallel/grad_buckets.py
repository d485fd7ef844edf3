"""Data parallelism: parameters and gradients packed into flat buffers cut into buckets, and
each bucket's gradients reduced over the DP group as soon as its last gradient is final.

Reducing per bucket (not per tensor) sends few large messages; starting a bucket inside the
backward overlaps its communication with the rest of the backward. A parameter's gradient is
final after its last micro-batch's backward: the trainer *arms* parameters just before that
backward (all of them before the last micro-batch without a pipeline; a model chunk's own
before that chunk's last backward in a pipeline schedule), and a bucket launches when every
parameter in it has fired armed. With ZeRO-1 a bucket is reduce-scattered instead of
all-reduced: DP rank r receives the averaged gradients of the r-th 1/dp of every bucket, the
part its optimizer shard updates (see optimizer.py).

Some gradients must first be summed over a model-parallel group (`PreReduction`): with
sequence parallelism the TP-replicated weights (LayerNorm, row-parallel biases) each saw one
sequence shard, and a pipeline's two copies of the tied word embedding each saw one end of
the model. Such parameters get buckets of their own, so the sum is one message per bucket.
The TP sum runs inside the backward, when the bucket fills (every TP rank runs the same
backward, so their collectives meet in order). The embedding sum spans the first and last
stages, which finish their backwards at different times: it is deferred to
`finish_grad_sync`, as Megatron does, and only then is that bucket reduced over DP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.parallel import comm


@dataclass(frozen=True)
class PreReduction:
    """Gradients summed over `group` before their DP reduction; `in_backward` when the group's
    ranks run the same backward (TP), so the sum can run as soon as the bucket is full."""

    group: object
    in_backward: bool


@dataclass
class Bucket:
    index: int
    start: int  # offset in the flat buffers
    end: int  # exclusive; (end - start) is a multiple of dp
    size: int  # parameters in the bucket
    pre: PreReduction | None = None
    pending: int = 0
    handle: object = None
    launched: bool = False

    def shard(self, rank: int, parts: int) -> tuple[int, int]:
        step = (self.end - self.start) // parts
        return self.start + rank * step, self.start + (rank + 1) * step


def _plan(ordered: list[nn.Parameter], pre_reductions: dict, limit: int
          ) -> list[tuple[PreReduction | None, list[nn.Parameter]]]:
    """Bucket membership in gradient order: one open bucket per pre-reduction kind, closed
    when it reaches `limit` elements."""
    open_buckets: dict[int, tuple[PreReduction | None, list, int]] = {}
    plan = []
    for param in ordered:
        pre = pre_reductions.get(param)
        key = id(pre)
        _, members, numel = open_buckets.get(key, (pre, [], 0))
        members.append(param)
        numel += param.numel()
        if numel >= limit:
            plan.append((pre, members))
            open_buckets.pop(key, None)
        else:
            open_buckets[key] = (pre, members, numel)
    plan += [(pre, members) for pre, members, _ in open_buckets.values()]
    return plan


class GradBuckets:
    """Flat fp32 parameter and gradient storage for `params`, reduced over `dp_group`.

    After construction every parameter's `.data` and `.grad` are views into `self.params` and
    `self.grads`, so autograd accumulates micro-batch gradients straight into the buckets.
    `events`, when set to a list, records ("launch", bucket index) as buckets start.
    """

    def __init__(self, params: list[nn.Parameter], dp_group, *, dp_rank: int, bucket_mb: float,
                 shard: bool, pre_reductions: dict[nn.Parameter, PreReduction] | None = None):
        self.group, self.dp = dp_group, comm.group_size(dp_group)
        self.dp_rank, self.sharded = dp_rank, shard  # at dp = 1: one shard, same path
        self.events: list | None = None
        device = params[0].device
        limit = max(1, int(bucket_mb * 2**20 / 4))
        # Backward produces gradients roughly in reverse order of the forward.
        plan = _plan(list(reversed(params)), pre_reductions or {}, limit)
        self.buckets: list[Bucket] = []
        self.offsets: dict[nn.Parameter, int] = {}
        self._bucket_of: dict[nn.Parameter, Bucket] = {}
        cursor = 0
        for pre, members in plan:
            start = cursor
            for param in members:
                self.offsets[param] = cursor
                cursor += param.numel()
            end = start + -(-(cursor - start) // self.dp) * self.dp
            bucket = Bucket(len(self.buckets), start, end, len(members), pre)
            self.buckets.append(bucket)
            self._bucket_of.update({p: bucket for p in members})
            cursor = end
        self.numel = cursor
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
        self._armed: set[nn.Parameter] = set()
        if self.dp > 1 or any(b.pre is not None and b.pre.in_backward for b in self.buckets):
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
        """Start a step: gradients zero, every bucket waiting for its parameters again."""
        self.grads.zero_()
        self._armed.clear()
        for bucket in self.buckets:
            bucket.pending, bucket.launched, bucket.handle = bucket.size, False, None

    def arm(self, params=None) -> None:
        """The next gradient of `params` (default: all) is final: call just before the
        backward that produces it; buckets reduce as they fill."""
        self._armed.update(self.offsets if params is None else params)

    start_grad_sync = arm  # before the last micro-batch's backward, without a pipeline

    def _on_grad_ready(self, param: nn.Parameter) -> None:
        if param not in self._armed:
            return
        self._armed.discard(param)
        bucket = self._bucket_of[param]
        bucket.pending -= 1
        if bucket.pending == 0 and (bucket.pre is None or bucket.pre.in_backward):
            self._launch(bucket)

    def _launch(self, bucket: Bucket) -> None:
        grads = self.grads[bucket.start: bucket.end]
        if bucket.pre is not None:
            comm.all_reduce(grads, bucket.pre.group)
        if self.events is not None:
            self.events.append(("launch", bucket.index))
        if self.dp > 1:
            grads.div_(self.dp)  # sum of averages = average; gloo has no AVG op
        if self.sharded:
            bucket.handle = comm.reduce_scatter_async(self.local_grad(bucket.index), grads,
                                                      self.group)
        else:
            bucket.handle = comm.all_reduce_async(grads, self.group)
        bucket.launched = True

    def finish_grad_sync(self) -> None:
        """After the last backward: reduce what did not launch during it (deferred sums,
        unused parameters), in bucket order on every rank, and wait for all."""
        self._armed.clear()
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
