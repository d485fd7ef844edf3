"""Data parallelism: parameters and gradients packed into flat buffers cut into buckets, and
each bucket's gradients reduced over the DP group as soon as its last gradient is final.
The buffers hold the model's dtype (bf16 or fp32); fp32 master weights live in the optimizer.

Reducing per bucket (not per tensor) sends few large messages; starting a bucket inside the
backward overlaps its communication with the rest of the backward. A parameter's gradient is
final after its last micro-batch's backward: the trainer *arms* parameters just before that
backward (all of them before the last micro-batch without a pipeline; a model chunk's own
before that chunk's last backward in a pipeline schedule), and a bucket launches when every
parameter in it has fired armed. With ZeRO (stage >= 1) a bucket is reduce-scattered instead
of all-reduced: DP rank r receives the averaged gradients of the r-th 1/dp of every bucket, the
part its optimizer shard updates (see optimizer.py). Stage 1 receives them in place (its shard
of the full buffer, as Megatron's distributed optimizer).

Stages 2 and 3 keep only a 1/dp shard of the gradients, across micro-batches too (as DeepSpeed
and FSDP do): a bucket's full gradient buffer is made when its first gradient of a micro-batch
arrives (each `.grad` is added into it and dropped), reduce-scattered as soon as every one of
its parameters has fired, added into this rank's shard and freed. So full gradients exist only
for the buckets being filled or reduced, at the price of one reduce-scatter per bucket per
micro-batch (arming does not apply: every micro-batch's gradients are final for it). Stage 3
also keeps only this rank's 1/dp of the parameters (`param_shards`): each bucket's full
parameter buffer keeps its shape but holds no memory until `gather_params_async` fills it, and
`free_params` gives it back (zero3.py decides when). A stage-3 bucket never spans two `units`.

Some gradients must first be summed over a model-parallel group (`PreReduction`): with
sequence parallelism the TP-replicated weights (LayerNorm, row-parallel biases) each saw one
sequence shard, and a pipeline's two copies of the tied word embedding each saw one end of
the model. Such parameters get buckets of their own, so the sum is one message per bucket.
The TP sum runs inside the backward, when the bucket fills (every TP rank runs the same
backward, so their collectives meet in order). The embedding sum spans the first and last
stages, which finish their backwards at different times: it is deferred to
`finish_grad_sync`, as Megatron does, and only then is that bucket reduced over DP.

A parameter may name another reduction group (`ReduceGroup`): MoE experts are replicated over
expert-DP, not DP x CP, so their buckets reduce (and ZeRO-shard) over that group, divided by
the number of data-parallel replicas of the loss.
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


@dataclass(frozen=True)
class ReduceGroup:
    """Where a gradient is averaged: summed over `group` (this rank is `rank` of `size`), then
    divided by `divisor` (the DP x CP replicas of the loss; the group size for dense weights)."""

    group: object
    rank: int
    size: int
    divisor: int


@dataclass
class Bucket:
    index: int
    start: int  # offset in the flat buffers
    end: int  # exclusive; (end - start) is a multiple of dp
    size: int  # parameters in the bucket
    pre: PreReduction | None = None
    reduce: ReduceGroup | None = None
    pending: int = 0
    handle: object = None
    launched: bool = False

    def shard(self, rank: int, parts: int) -> tuple[int, int]:
        step = (self.end - self.start) // parts
        return self.start + rank * step, self.start + (rank + 1) * step


def _plan(ordered: list[nn.Parameter], pre_reductions: dict, limit: int, units=None,
          reduce_groups: dict | None = None
          ) -> list[tuple[PreReduction | None, list[nn.Parameter]]]:
    """Bucket membership in gradient order; with `units` (lists of parameters), per unit."""
    if units is None:
        return _plan_group(ordered, pre_reductions, limit, reduce_groups)
    unit_of = {}
    for index, unit in enumerate(units):
        for param in unit:
            unit_of.setdefault(param, index)
    groups: dict[int, list[nn.Parameter]] = {}
    for param in ordered:  # units in the order their first parameter comes
        groups.setdefault(unit_of.get(param, len(units)), []).append(param)
    return [entry for group in groups.values()
            for entry in _plan_group(group, pre_reductions, limit, reduce_groups)]


def _plan_group(ordered: list[nn.Parameter], pre_reductions: dict, limit: int,
                reduce_groups: dict | None = None
                ) -> list[tuple[PreReduction | None, list[nn.Parameter]]]:
    """One open bucket per pre-reduction kind (and reduction group), closed when it reaches
    `limit` elements."""
    open_buckets: dict[tuple, tuple[PreReduction | None, list, int]] = {}
    plan = []
    for param in ordered:
        pre = pre_reductions.get(param)
        key = (id(pre), id((reduce_groups or {}).get(param)))
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


# Stages 2-3: reduce-scatters in flight at once before the oldest is waited for (each holds
# its bucket's full gradients until then).
MAX_IN_FLIGHT = 2


class GradBuckets:
    """Flat parameter storage for `params` and gradient storage per bucket, in `dtype`,
    reduced over `dp_group`; `stage` is the ZeRO stage (0 to 3).

    After construction every parameter's `.data` is a view into `self.params` (stage 3: into
    its bucket's full buffer, empty until gathered). At stages 0-1 its `.grad` is a view into
    its bucket's gradient buffer, so autograd accumulates micro-batch gradients straight into
    the buckets; at stages 2-3 `.grad` is moved into the bucket as it arrives. `events`, when
    set to a list, records ("launch", bucket index) as buckets start.
    """

    def __init__(self, params: list[nn.Parameter], dp_group, *, dp_rank: int, bucket_mb: float,
                 stage: int, dtype: torch.dtype = torch.float32,
                 pre_reductions: dict[nn.Parameter, PreReduction] | None = None,
                 units: list[list[nn.Parameter]] | None = None,
                 reduce_groups: dict[nn.Parameter, ReduceGroup] | None = None):
        self.group, self.dp = dp_group, comm.group_size(dp_group)
        self.dp_rank, self.stage = dp_rank, stage
        self.sharded = stage >= 1  # at dp = 1: one shard, same path
        self.events: list | None = None
        self.device, self.dtype = params[0].device, dtype
        limit = max(1, int(bucket_mb * 2**20 / torch.finfo(dtype).bits * 8))
        # Backward produces gradients roughly in reverse order of the forward.
        plan = _plan(list(reversed(params)), pre_reductions or {}, limit, units, reduce_groups)
        default = ReduceGroup(dp_group, dp_rank, self.dp, self.dp)
        self.buckets: list[Bucket] = []
        self.offsets: dict[nn.Parameter, int] = {}
        self._bucket_of: dict[nn.Parameter, Bucket] = {}
        cursor = 0
        for pre, members in plan:
            start = cursor
            for param in members:
                self.offsets[param] = cursor
                cursor += param.numel()
            reduce = (reduce_groups or {}).get(members[0], default)
            end = start + -(-(cursor - start) // reduce.size) * reduce.size
            bucket = Bucket(len(self.buckets), start, end, len(members), pre, reduce)
            self.buckets.append(bucket)
            self._bucket_of.update({p: bucket for p in members})
            cursor = end
        self.numel = cursor
        self._members = [members for _, members in plan]
        shard_sizes = [(b.end - b.start) // b.reduce.size for b in self.buckets]
        self._local_starts = [sum(shard_sizes[:i]) for i in range(len(self.buckets))]
        self._store_params(dtype, sum(shard_sizes))
        # Per bucket: its full gradients (None while freed: stages 2-3 outside a bucket's fill).
        self.grad_buffers: list[torch.Tensor | None] = [None] * len(self.buckets)
        if stage <= 1:
            self._make_grad_buffers()
        # Stages 2-3: this rank's reduced shard of every bucket, the only gradients kept.
        self.shard_grads = (torch.zeros(sum(shard_sizes), dtype=dtype, device=self.device)
                            if stage >= 2 else None)
        self._in_flight: list[tuple[Bucket, object, torch.Tensor, torch.Tensor]] = []
        self._armed: set[nn.Parameter] = set()
        if stage >= 2 or any(b.reduce.size > 1 or (b.pre is not None and b.pre.in_backward)
                             for b in self.buckets):
            for param in params:
                param.register_post_accumulate_grad_hook(self._on_grad_ready)

    def _store_params(self, dtype: torch.dtype, shard_numel: int) -> None:
        """Point every parameter into flat storage: one buffer for all (stages 0-2), or per
        bucket a full buffer, freed, plus this rank's shard of each (stage 3)."""
        if self.stage <= 2:
            self.params, self.param_shards, self.full_params = (
                torch.zeros(self.numel, dtype=dtype, device=self.device), None, [])
            buffers = [self.params[b.start: b.end] for b in self.buckets]
        else:
            self.params = None
            self.param_shards = torch.zeros(shard_numel, dtype=dtype, device=self.device)
            self.full_params = [torch.zeros(b.end - b.start, dtype=dtype, device=self.device)
                                for b in self.buckets]
            buffers = self.full_params
        for bucket, buffer in zip(self.buckets, buffers, strict=True):
            for param in self._members[bucket.index]:
                lo = self.offsets[param] - bucket.start
                view = buffer[lo: lo + param.numel()].view_as(param)
                view.copy_(param.data)
                param.data = view
            if self.stage >= 3:
                lo, hi = self.local_range(bucket.index)
                self.shard_params(bucket.index).copy_(buffer[lo - bucket.start: hi - bucket.start])
                self.free_params(bucket.index)

    def shard_params(self, index: int) -> torch.Tensor:
        """The parameters of `local_range(index)`: what this rank's optimizer updates."""
        lo, hi = self.local_range(index)
        if self.param_shards is None:
            return self.params[lo:hi]
        start = self._local_starts[index]
        return self.param_shards[start: start + hi - lo]

    def grad_tensors(self) -> list[torch.Tensor]:
        """Every tensor of gradient storage alive now: full bucket buffers (being filled or
        being reduced, with their received shards) and the shard buffer."""
        in_flight = [t for _, _, received, grads in self._in_flight for t in (received, grads)]
        return [t for t in (*self.grad_buffers, *in_flight, self.shard_grads) if t is not None]

    def param_tensors(self) -> list[torch.Tensor]:
        """Every tensor of parameter storage (for memory accounting)."""
        return [self.params] if self.params is not None else [self.param_shards,
                                                               *self.full_params]

    def gather_params_async(self, index: int):
        """Stage 3: give bucket `index`'s full buffer its memory back and start all-gathering
        the ranks' shards into it; returns what to `comm.wait` on."""
        full = self.full_params[index]
        full.untyped_storage().resize_(full.numel() * full.element_size())
        return comm.all_gather_async(full, self.shard_params(index),
                                     self.buckets[index].reduce.group)

    def free_params(self, index: int) -> None:
        """Stage 3: drop bucket `index`'s full parameters (their views keep shape, not memory;
        autograd's saved references see the data again once re-gathered)."""
        self.full_params[index].untyped_storage().resize_(0)

    def buckets_of(self, params) -> list[int]:
        """Indices of the buckets holding `params`."""
        return sorted({self._bucket_of[param].index for param in params})

    def local_range(self, index: int) -> tuple[int, int]:
        """The flat-buffer range of bucket `index` that this rank's optimizer updates."""
        bucket = self.buckets[index]
        if not self.sharded:
            return bucket.start, bucket.end
        return bucket.shard(bucket.reduce.rank, bucket.reduce.size)

    def local_grad(self, index: int) -> torch.Tensor:
        """This rank's reduced gradients for `local_range(index)`."""
        if self.stage >= 2:
            lo, hi = self.local_range(index)
            start = self._local_starts[index]
            return self.shard_grads[start: start + hi - lo]
        bucket, (lo, hi) = self.buckets[index], self.local_range(index)
        return self.grad_buffers[index][lo - bucket.start: hi - bucket.start]

    def _make_grad_buffers(self) -> None:
        """Zeroed gradient buffers for every bucket, each parameter's `.grad` a view into
        its own (buffers that exist are zeroed in place)."""
        for index, bucket in enumerate(self.buckets):
            if self.grad_buffers[index] is not None:
                self.grad_buffers[index].zero_()
                continue
            buffer = torch.zeros(bucket.end - bucket.start, dtype=self.params.dtype,
                                 device=self.params.device)
            self.grad_buffers[index] = buffer
            for param in self._members[index]:
                lo = self.offsets[param] - bucket.start
                param.grad = buffer[lo: lo + param.numel()].view_as(param)

    def zero_grad(self) -> None:
        """Start a step: gradients zero, every bucket waiting for its parameters again."""
        if self.stage >= 2:
            self.shard_grads.zero_()
        else:
            self._make_grad_buffers()
        self._armed.clear()
        for bucket in self.buckets:
            bucket.pending, bucket.launched, bucket.handle = bucket.size, False, None

    def arm(self, params=None) -> None:
        """The next gradient of `params` (default: all) is final: call just before the
        backward that produces it; buckets reduce as they fill."""
        self._armed.update(self.offsets if params is None else params)

    start_grad_sync = arm  # before the last micro-batch's backward, without a pipeline

    def _on_grad_ready(self, param: nn.Parameter) -> None:
        if self.stage >= 2:
            self._accumulate(param)
            return
        if param not in self._armed:
            return
        self._armed.discard(param)
        bucket = self._bucket_of[param]
        bucket.pending -= 1
        if bucket.pending == 0 and (bucket.pre is None or bucket.pre.in_backward):
            self._launch(bucket)

    def _launch(self, bucket: Bucket) -> None:
        grads = self.grad_buffers[bucket.index]
        if bucket.pre is not None:
            comm.all_reduce(grads, bucket.pre.group)
        if self.events is not None:
            self.events.append(("launch", bucket.index))
        if bucket.reduce.divisor > 1:
            grads.div_(bucket.reduce.divisor)  # sum of averages = average; gloo has no AVG op
        if self.sharded:
            bucket.handle = comm.reduce_scatter_async(self.local_grad(bucket.index), grads,
                                                      bucket.reduce.group)
        else:
            bucket.handle = comm.all_reduce_async(grads, bucket.reduce.group)
        bucket.launched = True

    def _accumulate(self, param: nn.Parameter) -> None:
        """Stages 2-3: move a micro-batch's gradient into its bucket (made on first use) and
        reduce the bucket into the shard once all its parameters fired. Buckets with a
        deferred sum (the pipeline's tied embedding) accumulate until `finish_grad_sync`."""
        bucket = self._bucket_of[param]
        buffer = self.grad_buffers[bucket.index]
        if buffer is None:
            buffer = self.grad_buffers[bucket.index] = torch.zeros(
                bucket.end - bucket.start, dtype=self.dtype, device=self.device)
        lo = self.offsets[param] - bucket.start
        buffer[lo: lo + param.numel()].add_(param.grad.reshape(-1))
        param.grad = None
        bucket.pending -= 1
        if bucket.pending == 0 and (bucket.pre is None or bucket.pre.in_backward):
            self._reduce_into_shard(bucket)

    def _reduce_into_shard(self, bucket: Bucket) -> None:
        """Start reduce-scattering a bucket's full gradients; its buffer leaves the bucket (a
        later micro-batch makes a new one) and is freed when the reduction completes."""
        grads = self.grad_buffers[bucket.index]
        self.grad_buffers[bucket.index] = None
        bucket.pending = bucket.size
        if bucket.pre is not None:
            comm.all_reduce(grads, bucket.pre.group)
        if self.events is not None:
            self.events.append(("launch", bucket.index))
        if bucket.reduce.divisor > 1:
            grads.div_(bucket.reduce.divisor)
        received = grads.new_empty((bucket.end - bucket.start) // bucket.reduce.size)
        handle = comm.reduce_scatter_async(received, grads, bucket.reduce.group)
        self._in_flight.append((bucket, handle, received, grads))
        while len(self._in_flight) > MAX_IN_FLIGHT:
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        bucket, handle, received, _ = self._in_flight.pop(0)
        comm.wait(handle)
        self.local_grad(bucket.index).add_(received)

    def finish_grad_sync(self) -> None:
        """After the last backward: reduce what did not launch during it (deferred sums,
        unused parameters), in bucket order on every rank, and wait for all."""
        self._armed.clear()
        if self.stage >= 2:
            for bucket in self.buckets:
                if self.grad_buffers[bucket.index] is not None:
                    self._reduce_into_shard(bucket)
            while self._in_flight:
                self._complete_oldest()
            return
        for bucket in self.buckets:
            if not bucket.launched:
                self._launch(bucket)
        for bucket in self.buckets:
            comm.wait(bucket.handle)
            bucket.handle = None

    def gather_params(self) -> None:
        """ZeRO 1-2: each rank updated its shard of every bucket; all-gather the whole. (Stage 3
        gathers a unit's buckets only when it runs.)"""
        if not self.sharded or self.stage >= 3:
            return
        for index, bucket in enumerate(self.buckets):
            lo, hi = self.local_range(index)
            comm.all_gather_into(self.params[bucket.start: bucket.end], self.params[lo:hi],
                                 bucket.reduce.group)
