"""Every collective and point-to-point op the trainer issues, in one place: checked, skipped
when pointless, and timed.

Checked: each tensor must sit on the device its group's backend carries (NCCL: CUDA, gloo:
CPU). A CPU tensor on an NCCL group crashes deep inside the backend, and only on multi-GPU
runs; here it is one clear error naming the op and the group, raised on any world size, so a
one-GPU run (or a unit test) catches what an eight-GPU restart would hit.

Skipped: a group of one rank (`SOLO`, or any group of size 1) pays nothing.

Timed: `COMM_CLOCK` accumulates *exposed* communication time: how long the compute waited on
communication. On CPU that is host time inside blocking calls and waits (gloo runs async ops on
its own threads, so an overlapped reduction costs only its final wait). On CUDA, NCCL calls
return at once and the compute stream waits on the device; host time would measure kernel
launches, so CUDA events around each call and wait measure the stream's stall instead.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


class CommDeviceError(RuntimeError):
    """A tensor handed to a collective is not on the device its group communicates on."""


class CommClock:
    """Exposed communication seconds since the last `reset` (see the module docstring)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def reset(self) -> float:
        """Seconds since the last reset; on CUDA this waits for the timed events."""
        for start, end in self._events:
            end.synchronize()
            self.seconds += start.elapsed_time(end) / 1000.0
        self._events.clear()
        spent, self.seconds = self.seconds, 0.0
        return spent

    @contextmanager
    def timing(self, device: torch.device):
        if device.type == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end = torch.cuda.Event(enable_timing=True)
                end.record()
                self._events.append((start, end))
            return
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - begin


COMM_CLOCK = CommClock()

SOLO = "solo"
"""Stands for a group of one rank (torch's `None` would mean the whole world)."""

# torch 2.13 (the pinned version) names the flat-tensor collectives `*_single` and deprecates
# `all_gather_into_tensor` / `reduce_scatter_tensor`; pyproject allows torch >= 2.4, which has
# only the old names.
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

_GROUP_NAMES: dict[object, str] = {}
_BACKEND_DEVICE = {"nccl": "cuda", "gloo": "cpu"}


def name_group(group, name: str) -> None:
    """Register the grid's name of a group, for error messages."""
    _GROUP_NAMES[group] = name


def forget_groups() -> None:
    _GROUP_NAMES.clear()


def group_size(group) -> int:
    if group is SOLO or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def _group_name(group) -> str:
    if group is None or group is dist.group.WORLD:
        return "world"
    return _GROUP_NAMES.get(group, "unnamed")


def check_devices(op: str, group, *tensors: torch.Tensor) -> None:
    """Raise CommDeviceError unless every tensor is on the device `group`'s backend carries."""
    if group is SOLO or not dist.is_initialized():
        return
    backend = str(dist.get_backend(group))
    wanted = _BACKEND_DEVICE.get(backend)
    for tensor in tensors:
        if wanted is not None and tensor.device.type != wanted:
            raise CommDeviceError(
                f"comm.{op} on group '{_group_name(group)}' ({backend}): a tensor of shape "
                f"{tuple(tensor.shape)} is on {tensor.device}, but {backend} carries tensors on "
                f"{wanted}; create it on the grid's device (trainer.grid.device)")


@dataclass
class Pending:
    """An asynchronous op in flight; `wait` on it (through comm, so the wait is timed)."""

    work: object
    device: torch.device

    def is_completed(self) -> bool:
        return self.work.is_completed()


def all_reduce(tensor: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    check_devices("all_reduce", group, tensor)
    if group_size(group) > 1:
        with COMM_CLOCK.timing(tensor.device):
            dist.all_reduce(tensor, op=op, group=group)
    return tensor


def all_reduce_async(tensor: torch.Tensor, group) -> Pending | None:
    """Start a sum all-reduce; returns what to `wait` on (None when there is nothing to do)."""
    check_devices("all_reduce_async", group, tensor)
    if group_size(group) == 1:
        return None
    return Pending(dist.all_reduce(tensor, group=group, async_op=True), tensor.device)


def reduce_scatter_async(output: torch.Tensor, input_: torch.Tensor, group) -> Pending | None:
    """Sum `input_` over the group; rank r receives chunk r in `output`."""
    check_devices("reduce_scatter_async", group, output, input_)
    if group_size(group) == 1:
        output.copy_(input_)
        return None
    work = _reduce_scatter_flat(output, input_, group=group, async_op=True)
    return Pending(work, output.device)


def all_gather_into(output: torch.Tensor, input_: torch.Tensor, group) -> None:
    """Concatenate every rank's `input_` along dim 0 into `output` (in place when input is
    output's chunk)."""
    check_devices("all_gather_into", group, output, input_)
    if group_size(group) == 1:
        if output.data_ptr() != input_.data_ptr():
            output.copy_(input_)
        return
    with COMM_CLOCK.timing(output.device):
        _all_gather_flat(output, input_, group=group)


def all_to_all(output: torch.Tensor, input_: torch.Tensor, output_splits: list[int],
               input_splits: list[int], group) -> None:
    """Rank r sends rows `input_splits[j]` of `input_` (in order) to rank j and receives
    `output_splits[j]` rows from rank j into `output` (expert parallelism's token exchange)."""
    check_devices("all_to_all", group, output, input_)
    if group_size(group) == 1:
        output.copy_(input_)
        return
    with COMM_CLOCK.timing(output.device):
        dist.all_to_all_single(output, input_, output_splits, input_splits, group=group)


def all_gather_async(output: torch.Tensor, input_: torch.Tensor, group) -> Pending | None:
    """Start concatenating every rank's `input_` into `output` (ZeRO-3's prefetch); returns
    what to `wait` on (None when the group is one rank: copied at once)."""
    check_devices("all_gather_async", group, output, input_)
    if group_size(group) == 1:
        if output.data_ptr() != input_.data_ptr():
            output.copy_(input_)
        return None
    return Pending(_all_gather_flat(output, input_, group=group, async_op=True), output.device)


def barrier(group=None) -> None:
    """Every rank of `group` (default: the world) reaches this point."""
    if dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.barrier(group=group)


def wait(pending: Pending | None) -> None:
    if pending is not None:
        with COMM_CLOCK.timing(pending.device):
            pending.work.wait()


def post_p2p(sends: list[tuple[torch.Tensor, int]], recvs: list[tuple[torch.Tensor, int]],
             group) -> tuple[list[Pending], list[Pending]]:
    """Post sends and receives (tensor, global peer rank) as one batch, without waiting.
    Returns what to wait on for each send and each receive. A backend that coalesces the
    batch (NCCL) gives one handle for all, so every op then waits on that one."""
    tensors = [tensor for tensor, _ in sends + recvs]
    check_devices("post_p2p", group, *tensors)
    ops = [dist.P2POp(dist.isend, tensor, peer, group) for tensor, peer in sends]
    ops += [dist.P2POp(dist.irecv, tensor, peer, group) for tensor, peer in recvs]
    works = dist.batch_isend_irecv(ops)
    device = tensors[0].device
    if len(works) != len(ops):
        works = [works[0]] * len(ops)
    pending = [Pending(work, device) for work in works]
    return pending[:len(sends)], pending[len(sends):]
