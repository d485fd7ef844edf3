"""The pipeline runtime: executes any `Schedule` of schedules.py on real tensors.

One rank walks its steps in order. A FORWARD takes its input (the micro-batch's tokens on the
first stage, else the activation a receive stored), runs its model chunk and keeps the output
to send; a BACKWARD starts from the loss (last stage) or the received output gradient and keeps
its input's gradient to send. A step's point-to-point ops go out as one
`torch.distributed.batch_isend_irecv` after the compute and are waited on before the next step,
exactly the semantics `schedule_sim.validate` proved deadlock-free, on gloo or NCCL alike.

Evaluation runs the same schedule forward-only: backwards and gradient ops are dropped, which
only removes matched pairs of ops, so the schedule still cannot deadlock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
import torch.distributed as dist

from training.batches import MicroBatch
from training.parallel.comm import COMM_CLOCK
from training.parallel.grid import ProcessGrid
from training.parallel.schedules import Kind, Op, Schedule, Step, Tensor, build_schedule


class PipelineRuntime:
    """Runs this rank's model chunks (`model.forward(x, targets, chunk=c)`) under a schedule.

    `activation_shape` is what crosses between stages for one micro-batch: [micro, seq, hidden]
    or its sequence-parallel shard. `compute_seconds[kind]` accumulates this rank's forward and
    backward time, the complement of its idle share (bench/pipeline.py).
    """

    def __init__(self, model, grid: ProcessGrid, schedule: str, virtual_stages: int,
                 activation_shape: tuple[int, ...], autocast=None):
        self.model, self.grid, self.name = model, grid, schedule
        self.p, self.v, self.rank = grid.layout.pp, virtual_stages, grid.pp_rank
        self.activation_shape = activation_shape
        self.autocast = autocast or nullcontext()
        self.group = grid.group("pp")
        self._schedules: dict[int, Schedule] = {}
        self.compute_seconds = {Kind.FORWARD: 0.0, Kind.BACKWARD: 0.0}

    def schedule(self, m: int) -> Schedule:
        """The schedule for m micro-batches (batch ramp-up changes m, so one per m)."""
        if m not in self._schedules:
            self._schedules[m] = build_schedule(self.name, self.p, m, self.v)
        return self._schedules[m]

    def _stage(self, chunk: int) -> int:
        return chunk * self.p + self.rank

    def _is_last(self, chunk: int) -> bool:
        return self._stage(chunk) == self.p * self.v - 1

    def _peer(self, pp_rank: int) -> int:
        return self.grid.layout.rank(pp_rank, self.grid.dp_rank, self.grid.tp_rank)

    def run(self, micro_batches: Sequence[MicroBatch], *, train: bool = True,
            before_last_backward: Callable[[], None] | None = None) -> torch.Tensor:
        """Forward (and, when `train`, backward) every micro-batch (training.batches).
        Returns the sum of the micro-batch losses on the last stage, 0 elsewhere; gradients
        accumulate into `.grad` with the loss averaged over micro-batches."""
        m = len(micro_batches)
        steps = self.schedule(m).ranks[self.rank]
        last_backward = max((i for i, s in enumerate(steps)
                             if s.compute is not None and s.compute.kind is Kind.BACKWARD),
                            default=-1)
        received: dict[tuple[Tensor, int, int], torch.Tensor] = {}
        outgoing: dict[tuple[Tensor, int, int], torch.Tensor] = {}
        stash: dict[tuple[int, int], tuple[torch.Tensor | None, torch.Tensor]] = {}
        loss_sum = torch.zeros((), device=self.grid.device)
        for index, step in enumerate(steps):
            action = step.compute
            if action is not None and (train or action.kind is Kind.FORWARD):
                start = time.perf_counter()
                if action.kind is Kind.FORWARD:
                    loss = self._forward(action.microbatch, action.chunk, micro_batches[
                        action.microbatch], received, outgoing, stash, train)
                    if loss is not None:
                        loss_sum += loss.detach().float()
                else:
                    if index == last_backward and before_last_backward is not None:
                        before_last_backward()
                    self._backward(action.microbatch, action.chunk, m, received, outgoing,
                                   stash)
                self.compute_seconds[action.kind] += time.perf_counter() - start
            self._communicate(step, received, outgoing, train)
        return loss_sum

    def _forward(self, mb, chunk, batch, received, outgoing, stash, train):
        if self._stage(chunk) == 0:
            x = batch.inputs
            inputs = None
        else:
            inputs = received.pop((Tensor.ACTIVATION, mb, chunk)).requires_grad_(train)
            x = inputs
        targets = batch.targets if self._is_last(chunk) else None
        with self.autocast, (nullcontext() if train else torch.no_grad()):
            out = self.model(x, targets, chunk=chunk, documents=batch.documents)
        if train:
            stash[(mb, chunk)] = (inputs, out)
        if self._is_last(chunk):
            return out
        outgoing[(Tensor.ACTIVATION, mb, chunk)] = out.detach().float().contiguous()
        return None

    def _backward(self, mb, chunk, m, received, outgoing, stash):
        inputs, out = stash.pop((mb, chunk))
        if self._is_last(chunk):
            torch.autograd.backward(out / m)
        else:
            torch.autograd.backward(out, received.pop((Tensor.GRADIENT, mb, chunk)))
        if inputs is not None:
            outgoing[(Tensor.GRADIENT, mb, chunk)] = inputs.grad.contiguous()

    def _communicate(self, step: Step, received, outgoing, train: bool) -> None:
        ops, arriving = [], []
        for op in step.comms:
            if not train and op.tensor is Tensor.GRADIENT:
                continue
            key = (op.tensor, op.microbatch, op.chunk)
            if op.op is Op.SEND:
                ops.append(dist.P2POp(dist.isend, outgoing.pop(key), self._peer(op.peer),
                                      self.group))
            else:
                buffer = torch.empty(self.activation_shape, device=self.grid.device)
                ops.append(dist.P2POp(dist.irecv, buffer, self._peer(op.peer), self.group))
                arriving.append((key, buffer))
        if not ops:
            return
        with COMM_CLOCK.timing():
            for request in dist.batch_isend_irecv(ops):
                request.wait()
        received.update(arriving)
