"""The parts a decoder block is built from, chosen by `model:` keys through three factories:
`make_norm` (LayerNorm or RMSNorm), `make_attention` (multi-, grouped- or multi-query
attention, learned or rotary positions, over a pluggable attention core) and `make_mlp`
(GELU MLP or SwiGLU FFN), or `make_ffn` (the dense MLP, or on `model.moe.every`-th blocks
the MoE layer of training/moe). The GPT in model.py only wires them; a new core (ring
attention, document masks) or FFN plugs in here.

Tensor parallelism: query heads are split over TP; KV heads too when tp divides them, and
replicated when there are fewer than tp (each rank then computes all of them, uses the group of
its own query heads, and its weight gradient is partial: its placement sums it over TP).
SwiGLU's gate and up projections are one column-parallel linear whose rows alternate
(gate_0, up_0, gate_1, up_1, ...), so any TP slice holds matching gate/up pairs and the
layout does not depend on TP.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.config import ModelConfig
from training.parallel.grid import ProcessGrid
from training.parallel.placement import place, tensor_parallel
from training.parallel.rng import dropout_region, region_stream
from training.parallel.tensor import ColumnParallelLinear, RowParallelLinear

NORM_EPS = 1e-5

# (q, k, v, dropout, mask) -> output. q [batch, heads, seq, head_dim]; k, v may hold fewer
# heads (grouped-query: query head h reads KV head h // (heads / kv_heads)); mask: bool
# [batch, 1, seq, seq], True where a query may attend (documents kept apart), or None for the
# causal mask; ring attention (CP) takes the tokens' document ids [batch, seq] instead
AttentionCore = Callable[..., torch.Tensor]


def make_norm(cfg: ModelConfig, hidden: int | None = None) -> nn.Module:
    hidden = hidden or cfg.hidden
    if cfg.norm == "rmsnorm":
        norm = nn.RMSNorm(hidden, eps=NORM_EPS)
    else:
        norm = nn.LayerNorm(hidden, eps=NORM_EPS, bias=cfg.bias)
    for param in norm.parameters():
        place(param, tensor_parallel(None))
    return norm


def repeat_kv(kv: torch.Tensor, heads: int) -> torch.Tensor:
    """K or V [batch, kv_heads, seq, head_dim] repeated over each KV head's query group."""
    group = heads // kv.shape[1]
    return kv if group == 1 else kv.repeat_interleave(group, dim=1)


def causal_core(q, k, v, dropout: float, mask=None) -> torch.Tensor:
    """QK^T, causal (or `mask`ed) softmax, dropout, AV over [batch, heads, seq, head_dim]."""
    k, v = repeat_kv(k, q.shape[1]), repeat_kv(v, q.shape[1])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                          dropout_p=dropout)


def rotary_tables(head_dim: int, positions: torch.Tensor, theta: float):
    """cos and sin for the rotate-half convention (Llama's, as in HF): [seq, head_dim] for
    positions [seq], [batch, 1, seq, head_dim] for per-sample positions [batch, seq]."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq.to(positions.device)
    angles = torch.cat([angles, angles], dim=-1)
    if angles.dim() == 3:
        angles = angles.unsqueeze(1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Self-attention over this rank's query heads. With `kv_heads == heads` the projection is
    one `qkv` linear, head-major ([head][q|k|v][head_dim]); otherwise `q` ([head][head_dim])
    and `kv` ([kv_head][k|v][head_dim]), so a TP slice holds whole heads either way."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
                 sequence_parallel: bool, recompute_core: bool, core: AttentionCore):
        super().__init__()
        tp = grid.layout.tp
        self.head_dim = cfg.hidden // cfg.heads
        self.heads = cfg.heads // tp
        self.fused = cfg.kv == cfg.heads
        self.kv_replicated = cfg.kv < tp
        self.kv_heads = cfg.kv if self.kv_replicated else cfg.kv // tp
        # the KV heads this rank's query heads read (all of its local ones unless replicated)
        first_query = grid.tp_rank * self.heads
        group = cfg.heads // cfg.kv
        self.kv_used = (slice(first_query // group, first_query // group + 1)
                        if self.kv_replicated else slice(None))
        self.dropout, self.core, self.recompute_core = cfg.dropout, core, recompute_core
        self.rope = cfg.position == "rope"
        self.rope_theta = cfg.rope_theta
        # this rank's heads (and, under CP, its tokens) draw their own dropout masks
        self.region = region_stream(grid.tp_rank, grid.cp_rank, tp, by_tp=True)
        self.device = grid.device
        linear = dict(grid=grid, seed=seed, std=cfg.init_std, sequence_parallel=sequence_parallel,
                      bias=cfg.bias)
        if self.fused:
            self.qkv = ColumnParallelLinear(cfg.hidden, 3 * cfg.hidden, name=name + ".qkv",
                                            **linear)
        else:
            self.q = ColumnParallelLinear(cfg.hidden, cfg.hidden, name=name + ".q", **linear)
            self.kv = ColumnParallelLinear(cfg.hidden, 2 * cfg.kv * self.head_dim,
                                           name=name + ".kv", replicated=self.kv_replicated,
                                           **linear)
        self.proj = RowParallelLinear(cfg.hidden, cfg.hidden, name=name + ".proj",
                                      **{**linear, "std": cfg.init_std / math.sqrt(2 * cfg.layers)})

    def project(self, x):
        """q [b, heads, s, d] and k, v [b, kv heads this rank's queries read, s, d]: the core
        repeats them over their query groups (so ring attention passes only these around)."""
        if self.fused:
            qkv = self.qkv(x)
            batch, seq = qkv.shape[:2]
            q, k, v = qkv.view(batch, seq, self.heads, 3, self.head_dim).permute(
                3, 0, 2, 1, 4).unbind(0)
            return q, k, v
        q = self.q(x)
        batch, seq = q.shape[:2]
        q = q.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
        kv = self.kv(x).view(batch, seq, -1, 2, self.head_dim)[:, :, self.kv_used]
        k, v = kv.permute(3, 0, 2, 1, 4).unbind(0)
        return q, k, v

    def forward(self, x, positions: torch.Tensor | None = None, mask=None):
        q, k, v = self.project(x)  # with sequence parallelism x is a shard, q the whole sequence
        if self.rope:
            if positions is None:
                positions = torch.arange(q.shape[2], device=q.device)
            cos, sin = rotary_tables(self.head_dim, positions, self.rope_theta)
            cos, sin = cos.to(q.device), sin.to(q.device)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        # This rank's heads: their dropout masks must not repeat another rank's. The region
        # is entered outside the checkpoint, which then stashes and replays its stream.
        with dropout_region(self.training and self.dropout > 0, self.region, self.device):
            if self.recompute_core and torch.is_grad_enabled():
                out = checkpoint(self.core, q, k, v, dropout, mask, use_reentrant=False)
            else:
                out = self.core(q, k, v, dropout, mask)
        batch, seq = out.shape[0], out.shape[2]
        return self.proj(out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class MLP(nn.Module):
    """GELU (tanh approximation) MLP, or SwiGLU: silu(gate) * up from one `fc` linear."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
                 sequence_parallel: bool):
        super().__init__()
        self.gated = cfg.mlp == "swiglu"
        linear = dict(grid=grid, seed=seed, sequence_parallel=sequence_parallel, bias=cfg.bias)
        self.fc = ColumnParallelLinear(cfg.hidden, cfg.ffn * (2 if self.gated else 1),
                                       name=name + ".fc", std=cfg.init_std, **linear)
        self.proj = RowParallelLinear(cfg.ffn, cfg.hidden, name=name + ".proj",
                                      std=cfg.init_std / math.sqrt(2 * cfg.layers), **linear)

    def forward(self, x):
        hidden = self.fc(x)
        if self.gated:
            gate, up = hidden.unflatten(-1, (-1, 2)).unbind(-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(hidden, approximate="tanh"))


def make_attention(cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
                   sequence_parallel: bool, recompute_core: bool,
                   core: AttentionCore = causal_core) -> Attention:
    return Attention(cfg, grid, seed, name, sequence_parallel, recompute_core, core)


def make_mlp(cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
             sequence_parallel: bool) -> MLP:
    return MLP(cfg, grid, seed, name, sequence_parallel)


def make_ffn(cfg: ModelConfig, grid: ProcessGrid, seed: int, index: int, name: str,
             sequence_parallel: bool) -> nn.Module:
    """Block `index`'s FFN: an MoE layer where `model.moe` puts one, else the dense MLP."""
    if cfg.moe is not None and cfg.moe.is_moe_layer(index):
        from training.moe.layer import MoELayer  # it builds its shared experts from MLP

        return MoELayer(cfg, grid, seed, name, index, sequence_parallel)
    return make_mlp(cfg, grid, seed, name, sequence_parallel)
