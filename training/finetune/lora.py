"""LoRA (Hu et al., 2021) on the tensor-parallel linears: y = x W^T + b + (alpha / r) x A^T B^T,
W frozen, A [r, in] and B [out, r] trained, B starting at zero so training starts from the base.

How the adapter is split follows the base linear, so every TP slice computes its own part and
the communication stays what the base already does (training/parallel/tensor.py):

- column-parallel base (W split by output rows): A replicated, B split like W's rows. The
  input goes through the base's `f` (copy, or with sequence parallelism the all-gather) once,
  for both paths, so its backward sums the input gradients of both. Each rank's gradient of A
  only sees its rows of B: A's placement sums its gradient over TP in the backward.
- row-parallel base (W split by input columns): A split like W's columns, B replicated. The
  rank-r partial sums x_local A_local^T are reduced over TP *before* B, in the same collective
  as the base's partial outputs (concatenated: one all-reduce, or one reduce-scatter with
  sequence parallelism), and the LoRA output is added once, after it. With sequence
  parallelism B sees one sequence shard, so its placement sums its gradient over TP.
- a column-parallel base replicated over TP (grouped-query KV heads when kv_heads < tp): A
  and B replicated, both gradients summed over TP.

`lora.dropout` > 0 draws its masks on each rank's own input (a row-parallel adapter's input
is split over TP), so it is the same in distribution at every layout, not bit for bit.

Adapters are initialised as Hugging Face PEFT does (A Kaiming-uniform, B zero), drawn as the
full tensor from (seed, name) and sliced, so a model is the same function at every TP.
`perturbation` (GGPO, ggpo.py) is an extra weight added to W for the step's forward and
backward, never written into W.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.finetune.config import BLOCK_LINEARS, LoraConfig, matching_linears
from training.parallel import comm
from training.parallel.placement import amend, placement
from training.parallel.tensor import (
    ColumnParallelLinear,
    RowParallelLinear,
    copy_to_tensor_parallel,
    gather_from_sequence_parallel,
    reduce_from_tensor_parallel,
    reduce_scatter_to_sequence_parallel,
    shard,
    tp_parameter,
)


class LoraError(ValueError):
    """A LoRA setting this model cannot take; the message names the config key."""


def linear_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each linear a block of this architecture has."""
    h, head_dim = cfg.hidden, cfg.hidden // cfg.heads
    attention = ({"attn.qkv": (h, 3 * h)} if cfg.kv == cfg.heads else
                 {"attn.q": (h, h), "attn.kv": (h, 2 * cfg.kv * head_dim)})
    return {**attention, "attn.proj": (h, h),
            "mlp.fc": (h, cfg.ffn * (2 if cfg.mlp == "swiglu" else 1)),
            "mlp.proj": (cfg.ffn, h)}


def lora_problems(cfg: ModelConfig, lora: LoraConfig) -> list[str]:
    """Targets this architecture has no linear for, and a rank no adapted linear can hold."""
    shapes, problems, chosen = linear_shapes(cfg), [], set()
    for target in lora.targets:
        found = [name for name in matching_linears(target) if name in shapes]
        if not found:
            names = sorted({part for name in shapes for part in (name, name.split(".")[1])})
            problems.append(f"finetune.lora.targets: {target!r} is no linear of a "
                            f"model.arch {cfg.arch} block (it has: {', '.join(names)})")
        chosen.update(found)
    for name in sorted(chosen):
        fan_in, fan_out = shapes[name]
        if lora.rank > min(fan_in, fan_out):
            problems.append(f"finetune.lora.rank ({lora.rank}) is larger than {name} "
                            f"({fan_in} -> {fan_out}): a rank above {min(fan_in, fan_out)} "
                            "adds nothing a full update would not")
    return problems


def targeted(lora: LoraConfig, name: str) -> bool:
    return any(name in matching_linears(target) for target in lora.targets)


def _seeded_uniform(shape, bound: float, seed: int, name: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class LoraLinear(nn.Module):
    """A column- or row-parallel linear with a LoRA adapter. It takes over the base's `weight`
    and `bias` (the same Parameter objects, so their names and checkpoints do not change)."""

    def __init__(self, base: ColumnParallelLinear | RowParallelLinear, lora: LoraConfig, *,
                 grid, name: str, seed: int):
        super().__init__()
        self.row = isinstance(base, RowParallelLinear)
        self.weight, self.bias = base.weight, base.bias
        self.group, self.sequence_parallel = base.group, base.sequence_parallel
        self.name, self.rank, self.scale = name, lora.rank, lora.alpha / lora.rank
        self.dropout = nn.Dropout(lora.dropout) if lora.dropout else nn.Identity()
        self.tp, self.tp_rank = tp, tp_rank = grid.layout.tp, grid.tp_rank
        split = placement(self.weight).dim("tp") is not None and tp > 1
        out_features = self.weight.shape[0] * (tp if split and not self.row else 1)
        in_features = self.weight.shape[1] * (tp if split and self.row else 1)
        self.full_shape = (out_features, in_features)
        out_local, in_local = self.weight.shape  # this rank's box of the full W
        self.box = ((tp_rank * out_local, (tp_rank + 1) * out_local) if split and not self.row
                    else (0, out_features),
                    (tp_rank * in_local, (tp_rank + 1) * in_local) if split and self.row
                    else (0, in_features))
        a_full = _seeded_uniform((lora.rank, in_features), 1 / math.sqrt(in_features), seed,
                                 name + ".lora_A")  # kaiming_uniform_(a=sqrt(5)), as PEFT
        b_full = torch.zeros(out_features, lora.rank)
        if self.row:  # A split like W's input columns, B replicated
            self.lora_A = tp_parameter(shard(a_full, 1, tp_rank, tp), tp_dim=1)
            self.lora_B = tp_parameter(b_full, tp_dim=None)
            if self.sequence_parallel and split:  # B sees one sequence shard
                amend(self.lora_B, grad_sum="tp")
        else:  # A replicated, B split like W's output rows (or replicated with W)
            self.lora_A = tp_parameter(a_full, tp_dim=None)
            self.lora_B = tp_parameter(shard(b_full, 0, tp_rank, tp) if split else b_full,
                                       tp_dim=0 if split else None)
            if tp > 1:  # A's gradient sees this rank's rows of B only (B's too, replicated)
                for param in (self.lora_A,) if split else (self.lora_A, self.lora_B):
                    amend(param, grad_sum="tp")
        self.perturbation: torch.Tensor | None = None  # GGPO's epsilon, this rank's slice

    def effective_weight(self) -> torch.Tensor:
        if self.training and self.perturbation is not None:
            return self.weight + self.perturbation
        return self.weight

    def delta_weight(self) -> torch.Tensor:
        """This rank's slice of (alpha / r) B A, the update a merge adds to W."""
        return self.scale * self.lora_B @ self.lora_A

    def forward(self, x):
        weight = self.effective_weight()
        if self.row:
            return self._row_forward(x, weight)
        if self.sequence_parallel:
            x = gather_from_sequence_parallel(x, self.group)
        else:
            x = copy_to_tensor_parallel(x, self.group)
        low = F.linear(self.dropout(x), self.lora_A)
        return F.linear(x, weight, self.bias) + self.scale * F.linear(low, self.lora_B)

    def _row_forward(self, x, weight):
        partial = F.linear(x, weight)
        low = F.linear(self.dropout(x), self.lora_A)  # this rank's rank-r partial sums
        if comm.group_size(self.group) > 1:
            both = torch.cat([partial, low], dim=-1)  # one collective for both sums
            both = (reduce_scatter_to_sequence_parallel(both, self.group)
                    if self.sequence_parallel else reduce_from_tensor_parallel(both, self.group))
            partial, low = both.split([partial.shape[-1], self.rank], dim=-1)
        out = partial + self.scale * F.linear(low, self.lora_B)
        return out if self.bias is None else out + self.bias


def attach_lora(model: nn.Module, lora: LoraConfig, grid, seed: int) -> dict[str, LoraLinear]:
    """Replace the targeted linears of every block this rank holds by LoRA linears and freeze
    everything else; returns {global linear name: LoraLinear}."""
    for param in model.parameters():
        param.requires_grad_(False)
    adapted = {}
    for index, block in model.blocks.items():
        for local in BLOCK_LINEARS:
            parent_name, attr = local.split(".")
            parent = getattr(block, parent_name)
            if not targeted(lora, local) or not hasattr(parent, attr):
                continue
            name = f"blocks.{index}.{local}"
            layer = LoraLinear(getattr(parent, attr), lora, grid=grid, name=name, seed=seed)
            setattr(parent, attr, layer.to(grid.device))
            adapted[name] = layer
    return adapted


def adapter_names(name: str) -> tuple[str, str]:
    return f"{name}.lora_A", f"{name}.lora_B"
