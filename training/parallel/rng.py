"""Dropout randomness under tensor and sequence parallelism.

Dropout on activations that every TP rank holds whole (the residual stream without sequence
parallelism, the embedding output) must draw the same mask on every TP rank, or the replicas
drift apart: it uses the default stream, seeded alike on a stage's TP ranks. Dropout on
activations that differ across TP ranks (a rank's attention heads; with sequence
parallelism, a rank's sequence shard) must draw independent masks, or heads 0 and H/TP, or
tokens 0 and S/TP, share one. That is Megatron's model-parallel RNG region.

Megatron keeps a second RNG state per rank and swaps it in. Here the region's seed is drawn
from the default stream instead (one draw, the same on every TP rank) and offset by the TP
rank, so the region carries no state of its own: activation recomputation, which replays the
default stream, replays the region's masks too, and a checkpoint's saved default stream is
all a resume needs.

Context parallelism adds a second way for activations to differ: each CP rank holds other
tokens of the sequence, so dropout on the residual stream and on attention runs in a region
under CP as under sequence parallelism, its stream keyed by the CP rank too (`region_stream`).
TP ranks of one CP rank still share the residual stream's masks unless it is sequence-sharded."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

TP_REGION_OFFSET = 2718


def region_stream(tp_rank: int, cp_rank: int, tp: int, by_tp: bool) -> int:
    """The index of this rank's region stream: its own per CP rank, and per TP rank when the
    activations differ across TP ranks too (`by_tp`). Without CP it is the TP rank (or 0)."""
    return cp_rank * tp + (tp_rank if by_tp else 0)


@contextmanager
def tensor_parallel_region(stream: int, device: torch.device):
    """Run the body on random stream `stream` (this rank's: see `region_stream`); the default
    stream moves on by one draw, alike on every rank."""
    seed = int(torch.randint(0, 2**62, (1,))) + TP_REGION_OFFSET + stream
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[device.index].manual_seed(seed)
        yield


def dropout_region(active: bool, stream: int, device: torch.device):
    """`tensor_parallel_region` when dropout will draw on rank-specific activations, else
    nothing (so dropout-free runs consume no randomness here)."""
    return tensor_parallel_region(stream, device) if active else nullcontext()


class RegionDropout(nn.Dropout):
    """Dropout whose input is either the same on every rank of the model replica
    (`sharded=False`: the shared stream) or this rank's own piece of it (`sharded=True`: the
    region of stream `stream`)."""

    def __init__(self, p: float, sharded: bool, stream: int, device: torch.device):
        super().__init__(p)
        self.sharded, self.stream, self.device = sharded, stream, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.sharded and self.training and self.p > 0
        with dropout_region(active, self.stream, self.device):
            return super().forward(x)
