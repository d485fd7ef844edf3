"""A rank's local experts as one grouped GEMM (Megatron-Core's GroupedMLP; Liu et al., 2025,
sec. 4 "grouped GEMM"): the tokens arrive sorted by expert, are laid out as one padded
[experts, max tokens, hidden] batch and go through two batched matmuls, whatever the number
of experts or tokens: no Python loop over tokens or experts.

Each expert is a SwiGLU FFN, y = W2 (silu(W_gate x) * (W_up x)). Its `fc` rows alternate
gate and up (gate_0, up_0, gate_1, ...), as the dense SwiGLU in training/blocks.py, so an
expert-tensor-parallel (ETP) slice of rows holds matching pairs, `proj` is split by columns,
and the partial outputs of an ETP group sum to the expert's output (dispatch.reduce_scatter_v).

Weights are drawn full-size from the (seed, name) generator and sliced to this rank's experts
(EP) and rows (ETP), so the model is the same function at every (EP, ETP).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.parallel.placement import expert, place
from training.parallel.tensor import seeded_normal


def expert_parameter(full: torch.Tensor, ep_rank: int, ep: int, etp_dim: int, etp_rank: int,
                     etp: int) -> nn.Parameter:
    """This rank's slice of a [experts, ...] weight, with its placement: experts split over
    EP at dim 0 and replicated over EDP, `etp_dim` split over ETP (attention's TP does not
    split it)."""
    local = full.chunk(ep)[ep_rank]
    if etp > 1:
        local = local.chunk(etp, dim=etp_dim)[etp_rank]
    return place(nn.Parameter(local.contiguous()), expert(etp_dim if etp > 1 else None))


class GroupedExperts(nn.Module):
    def __init__(self, experts: int, hidden: int, ffn: int, *, layers: int, std: float,
                 seed: int, name: str, ep_rank: int = 0, ep: int = 1, etp_rank: int = 0,
                 etp: int = 1):
        super().__init__()
        self.local_experts = experts // ep
        fc = seeded_normal((experts, 2 * ffn, hidden), std, seed, name + ".fc")
        proj = seeded_normal((experts, hidden, ffn), std / math.sqrt(2 * layers), seed,
                             name + ".proj")
        self.fc = expert_parameter(fc, ep_rank, ep, 1, etp_rank, etp)
        self.proj = expert_parameter(proj, ep_rank, ep, 2, etp_rank, etp)

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x: [rows, hidden] sorted by local expert, `counts` [local experts] rows each."""
        width = int(counts.max()) if len(x) else 0
        expert = torch.repeat_interleave(torch.arange(self.local_experts, device=x.device),
                                         counts)
        slot = torch.arange(len(x), device=x.device) - (counts.cumsum(0) - counts)[expert]
        padded = x.new_zeros((self.local_experts, width, x.shape[-1]))
        padded = padded.index_put((expert, slot), x)
        hidden = torch.bmm(padded, self.fc.transpose(1, 2))
        gate, up = hidden.unflatten(-1, (-1, 2)).unbind(-1)
        out = torch.bmm(F.silu(gate) * up, self.proj.transpose(1, 2))
        return out[expert, slot]
