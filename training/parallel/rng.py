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
all a resume needs."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

TP_REGION_OFFSET = 2718


@contextmanager
def tensor_parallel_region(tp_rank: int, device: torch.device):
    """Run the body on this TP rank's own random stream; the default stream moves on by one
    draw, alike on every TP rank."""
    seed = int(torch.randint(0, 2**62, (1,))) + TP_REGION_OFFSET + tp_rank
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[device.index].manual_seed(seed)
        yield


def dropout_region(active: bool, tp_rank: int, device: torch.device):
    """`tensor_parallel_region` when dropout will draw on rank-specific activations, else
    nothing (so dropout-free runs consume no randomness here)."""
    return tensor_parallel_region(tp_rank, device) if active else nullcontext()


class RegionDropout(nn.Dropout):
    """Dropout whose input is either the same on every TP rank (`sharded=False`: the shared
    stream) or this rank's own piece of it (`sharded=True`: the TP region)."""

    def __init__(self, p: float, sharded: bool, tp_rank: int, device: torch.device):
        super().__init__(p)
        self.sharded, self.tp_rank, self.device = sharded, tp_rank, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = self.sharded and self.training and self.p > 0
        with dropout_region(active, self.tp_rank, self.device):
            return super().forward(x)
