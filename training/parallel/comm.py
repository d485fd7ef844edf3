"""The collectives the trainer uses, in one place so their time can be measured.

Each call is skipped when its group has one rank (the 1x1x1 run pays nothing), and the wall time
spent inside collectives accumulates in `COMM_CLOCK`, which the loop reports as the step's
communication share.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.distributed as dist


class CommClock:
    """Seconds spent inside blocking collectives and waits since the last `reset`."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def reset(self) -> float:
        spent, self.seconds = self.seconds, 0.0
        return spent

    @contextmanager
    def timing(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start


COMM_CLOCK = CommClock()

SOLO = "solo"
"""Stands for a group of one rank (torch's `None` would mean the whole world)."""


def group_size(group) -> int:
    if group is SOLO or not dist.is_initialized():
        return 1
    return dist.get_world_size(group)


def all_reduce(tensor: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if group_size(group) > 1:
        with COMM_CLOCK.timing():
            dist.all_reduce(tensor, op=op, group=group)
    return tensor


def all_reduce_async(tensor: torch.Tensor, group):
    """Start a sum all-reduce; returns a work handle (or None when there is nothing to do)."""
    if group_size(group) == 1:
        return None
    return dist.all_reduce(tensor, group=group, async_op=True)


def reduce_scatter_async(output: torch.Tensor, input_: torch.Tensor, group):
    """Sum `input_` over the group; rank r receives chunk r in `output`."""
    if group_size(group) == 1:
        output.copy_(input_)
        return None
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return scatter(output, input_, group=group, async_op=True)


def all_gather_into(output: torch.Tensor, input_: torch.Tensor, group) -> None:
    """Concatenate every rank's `input_` into `output` (in place when input is output's chunk)."""
    if group_size(group) == 1:
        if output.data_ptr() != input_.data_ptr():
            output.copy_(input_)
        return
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    with COMM_CLOCK.timing():
        gather(output, input_, group=group)


def wait(handle) -> None:
    if handle is not None:
        with COMM_CLOCK.timing():
            handle.wait()
