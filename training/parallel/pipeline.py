"""The pipeline runtime: executes any `Schedule` of schedules.py on real tensors.

One rank walks its steps in order. A FORWARD takes its input (the micro-batch's tokens on the
first stage, else the activation a receive stored), runs its model chunk and keeps the output
to send; a BACKWARD starts from the loss (last stage) or the received output gradient and keeps
its input's gradient to send. A step's point-to-point ops are posted as one batch
(`comm.post_p2p`) after the compute, in the order `schedule_sim.validate` proved deadlock-free.

Nothing waits for more than it needs: a compute waits only for the receive it consumes (so a
send and a receive of one batch do not wait for each other, nor does a compute wait for its
predecessor's send), and a sent tensor is dropped once its send completes. Every wait happens
no earlier, and on no more ops, than in the fully synchronous execution the simulator checks,
so the schedule stays deadlock-free. As Megatron's `deallocate_output_tensor`, a stage's output
gives up its storage once handed to the send (the backward needs only its graph), so the
activation memory a rank holds follows the schedule's in-flight micro-batches.

With `wire_dtype` bf16 (the `dtype: bf16` runs) activations and their gradients cross between
stages in bf16, half the bytes of fp32; each stage casts back to its compute dtype on arrival.

Evaluation runs the same schedule forward-only: backwards and gradient ops are dropped, which
only removes matched pairs of ops, so the schedule still cannot deadlock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext

import torch
from torch.autograd.variable import Variable

from training.batches import MicroBatch
from training.parallel import comm
from training.parallel.grid import ProcessGrid
from training.parallel.schedules import Kind, Op, Payload, Schedule, Step, build_schedule


def free_storage(tensor: torch.Tensor) -> None:
    """Drop a tensor's data but keep it (and its autograd graph) as a handle for backward."""
    tensor.data = torch.empty((1,), dtype=tensor.dtype, device=tensor.device)


def backward_from(out: torch.Tensor, grad: torch.Tensor) -> None:
    """`torch.autograd.backward(out, grad)` for an output whose storage was freed: the engine
    itself, without the Python wrapper's check that grad has out's (now one-element) shape."""
    Variable._execution_engine.run_backward(
        tensors=(out,), grad_tensors=(grad,), keep_graph=False, create_graph=False, inputs=(),
        allow_unreachable=True, accumulate_grad=True)


class PipelineRuntime:
    """Runs this rank's model chunks (`model.forward(x, targets, chunk=c)`) under a schedule.

    `activation_shape` is what crosses between stages for one micro-batch: [micro, seq, hidden]
    or its sequence-parallel shard. `compute_seconds[kind]` accumulates this rank's forward and
    backward time, the complement of its idle share (bench/pipeline.py). Set `events` to a list
    to record the order of computes, waits and posts; set `memory` to a list to record
    `memory_snapshot()` after each compute.
    """

    def __init__(self, model, grid: ProcessGrid, schedule: str, virtual_stages: int,
                 activation_shape: tuple[int, ...], autocast=None,
                 wire_dtype: torch.dtype = torch.float32):
        self.model, self.grid, self.name = model, grid, schedule
        self.p, self.v, self.rank = grid.layout.pp, virtual_stages, grid.pp_rank
        self.activation_shape, self.wire_dtype = activation_shape, wire_dtype
        self.autocast = autocast or nullcontext()
        self.group = grid.group("pp")
        self._schedules: dict[int, Schedule] = {}
        self.compute_seconds = {Kind.FORWARD: 0.0, Kind.BACKWARD: 0.0}
        self.events: list | None = None
        self.memory: list | None = None

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

    def _record(self, *event) -> None:
        if self.events is not None:
            self.events.append(event)

    def run(self, micro_batches: Sequence[MicroBatch], *, train: bool = True,
            before_last_backward: Callable[[int], None] | None = None) -> torch.Tensor:
        """Forward (and, when `train`, backward) every micro-batch (training.batches).
        `before_last_backward(chunk)` is called just before each chunk's last backward (its
        gradients are final after it). Returns the sum of the micro-batch losses on the last
        stage, 0 elsewhere; gradients accumulate into `.grad` with the loss averaged over
        micro-batches."""
        m = len(micro_batches)
        steps = self.schedule(m).ranks[self.rank]
        last_backward = {s.compute.chunk: i for i, s in enumerate(steps)
                         if s.compute is not None and s.compute.kind is Kind.BACKWARD}
        self._received: dict[tuple[Payload, int, int], tuple[torch.Tensor, comm.Pending]] = {}
        self._outgoing: dict[tuple[Payload, int, int], torch.Tensor] = {}
        self._in_flight_sends: list[tuple[comm.Pending, torch.Tensor]] = []
        self._stash: dict[tuple[int, int], tuple] = {}
        self._data = {batch.inputs.untyped_storage().data_ptr() for batch in micro_batches}
        loss_sum = torch.zeros((), device=self.grid.device)
        for index, step in enumerate(steps):
            action = step.compute
            if action is not None and (train or action.kind is Kind.FORWARD):
                start = time.perf_counter()
                self._record("start", action.kind, action.microbatch, action.chunk)
                if action.kind is Kind.FORWARD:
                    loss = self._forward(action.microbatch, action.chunk,
                                         micro_batches[action.microbatch], train)
                    if loss is not None:
                        loss_sum += loss.detach().float()
                else:
                    if before_last_backward is not None and last_backward[action.chunk] == index:
                        before_last_backward(action.chunk)
                    self._backward(action.microbatch, action.chunk, m)
                self._record("end", action.kind, action.microbatch, action.chunk)
                self.compute_seconds[action.kind] += time.perf_counter() - start
                if self.memory is not None:
                    self.memory.append(self.memory_snapshot())
            self._post(step, train)
            self._release_completed_sends()
        for pending, _ in self._in_flight_sends:
            comm.wait(pending)
        self._in_flight_sends.clear()
        return loss_sum

    def _take(self, payload: Payload, mb: int, chunk: int) -> torch.Tensor:
        """A received tensor, once its receive (and only that) has completed."""
        tensor, pending = self._received.pop((payload, mb, chunk))
        self._record("wait", payload, mb, chunk)
        comm.wait(pending)
        return tensor

    def _forward(self, mb, chunk, batch, train):
        saved = [] if self.memory is not None and train else None
        if self._stage(chunk) == 0:
            x, inputs = batch.inputs, None
        else:
            inputs = self._take(Payload.ACTIVATION, mb, chunk).requires_grad_(train)
            x = inputs if inputs.dtype == torch.float32 else inputs.float()
        targets = batch.targets if self._is_last(chunk) else None
        hooks = (torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t) if saved is not None else nullcontext())
        with self.autocast, hooks, (nullcontext() if train else torch.no_grad()):
            out = self.model(x, targets, chunk=chunk, documents=batch.documents)
        if self._is_last(chunk):
            if train:
                self._stash[(mb, chunk)] = (inputs, out, saved)
            return out
        self._outgoing[(Payload.ACTIVATION, mb, chunk)] = \
            out.detach().to(self.wire_dtype).contiguous()
        if train:
            free_storage(out)  # the send holds the data until it completes
            self._stash[(mb, chunk)] = (inputs, out, saved)
        return None

    def _backward(self, mb, chunk, m):
        inputs, out, _ = self._stash.pop((mb, chunk))
        if self._is_last(chunk):
            torch.autograd.backward(out / m)
        else:
            grad = self._take(Payload.GRADIENT, mb, chunk)
            backward_from(out, grad.to(out.dtype))
        if inputs is not None:
            self._outgoing[(Payload.GRADIENT, mb, chunk)] = \
                inputs.grad.to(self.wire_dtype).contiguous()

    def _post(self, step: Step, train: bool) -> None:
        sends, recvs, keys = [], [], []
        for op in step.comms:
            if not train and op.payload is Payload.GRADIENT:
                continue
            key = (op.payload, op.microbatch, op.chunk)
            if op.op is Op.SEND:
                sends.append((self._outgoing.pop(key), self._peer(op.peer)))
            else:
                buffer = torch.empty(self.activation_shape, dtype=self.wire_dtype,
                                     device=self.grid.device)
                recvs.append((buffer, self._peer(op.peer)))
                keys.append(key)
        if not sends and not recvs:
            return
        self._record("post", tuple(op for op in step.comms
                                   if train or op.payload is not Payload.GRADIENT))
        sent, received = comm.post_p2p(sends, recvs, self.group)
        self._in_flight_sends += [(pending, tensor) for pending, (tensor, _) in zip(
            sent, sends, strict=True)]
        for key, pending, (buffer, _) in zip(keys, received, recvs, strict=True):
            self._received[key] = (buffer, pending)

    def _release_completed_sends(self) -> None:
        """Drop the tensors of sends that completed (their memory goes back at once)."""
        self._in_flight_sends = [(pending, tensor) for pending, tensor in self._in_flight_sends
                                 if not pending.is_completed()]

    def memory_snapshot(self) -> tuple[int, int, int]:
        """(micro-batches in flight, live activation bytes, bytes of stage outputs): the bytes
        this rank holds for micro-batches between their forward and their backward, i.e. what
        autograd saved for the backward (parameters and the token batch excluded) and the
        stage inputs and outputs, each storage once. Buffers of sends in flight (at most a
        batch's) are not counted; outputs are, to show they were given up."""
        params = {p.untyped_storage().data_ptr() for p in self.model.parameters()}
        params |= self._data
        storages: dict[int, int] = {}
        outputs = 0
        for (_, chunk), (inputs, out, saved) in self._stash.items():
            if not self._is_last(chunk):
                outputs += out.untyped_storage().nbytes()
            for tensor in (inputs, out, *(saved or ())):
                if tensor is not None and tensor.untyped_storage().data_ptr() not in params:
                    storage = tensor.untyped_storage()
                    storages[storage.data_ptr()] = storage.nbytes()
        return len(self._stash), sum(storages.values()), outputs
