"""A GPT built from Megatron's tensor-parallel layers: embedding -> blocks -> final LN + tied
output, as a sequence that a pipeline stage can own a contiguous slice of.

Pre-LayerNorm blocks, GELU MLP, learned positions, causal attention through
`scaled_dot_product_attention`. QKV and MLP-in are column-parallel, attention-out and MLP-out
row-parallel; the output layer multiplies by this rank's vocabulary slice of the word
embedding and the vocabulary-parallel cross-entropy takes it from there.

Parameter names are global (`blocks.17.mlp.fc.weight` on whichever stage owns block 17) and
seed each weight's initialisation, so the model is the same for any TP or PP split.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.parallel import comm
from training.parallel.grid import ProcessGrid
from training.parallel.tensor import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    copy_to_tensor_parallel,
    seeded_normal,
    tp_parameter,
    vocab_parallel_cross_entropy,
)


def layer_norm(hidden: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(hidden)
    norm.weight.tp_dim = norm.bias.tp_dim = None
    return norm


class Embedding(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, grid: ProcessGrid, seed: int):
        super().__init__()
        self.word = VocabParallelEmbedding(vocab_size, cfg.hidden, grid=grid, name="embedding.word",
                                           seed=seed, std=cfg.init_std)
        self.position = tp_parameter(
            seeded_normal((cfg.seq_len, cfg.hidden), cfg.init_std, seed, "embedding.position"),
            tp_dim=None)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, tokens):
        return self.dropout(self.word(tokens) + self.position[: tokens.shape[1]])


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str):
        super().__init__()
        self.heads = cfg.heads // grid.layout.tp
        self.head_dim = cfg.hidden // cfg.heads
        self.dropout = cfg.dropout
        # QKV rows are laid out head-major ([head][q|k|v][head_dim]) so that a contiguous
        # column-parallel slice holds whole heads.
        self.qkv = ColumnParallelLinear(cfg.hidden, 3 * cfg.hidden, grid=grid, name=name + ".qkv",
                                        seed=seed, std=cfg.init_std)
        self.proj = RowParallelLinear(cfg.hidden, cfg.hidden, grid=grid, name=name + ".proj",
                                      seed=seed, std=cfg.init_std / math.sqrt(2 * cfg.layers))

    def forward(self, x):
        batch, seq, _ = x.shape
        qkv = self.qkv(x).view(batch, seq, self.heads, 3, self.head_dim)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str):
        super().__init__()
        self.fc = ColumnParallelLinear(cfg.hidden, cfg.ffn, grid=grid, name=name + ".fc",
                                       seed=seed, std=cfg.init_std)
        self.proj = RowParallelLinear(cfg.ffn, cfg.hidden, grid=grid, name=name + ".proj",
                                      seed=seed, std=cfg.init_std / math.sqrt(2 * cfg.layers))

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, index: int):
        super().__init__()
        name = f"blocks.{index}"
        self.ln1 = layer_norm(cfg.hidden)
        self.attn = Attention(cfg, grid, seed, name + ".attn")
        self.ln2 = layer_norm(cfg.hidden)
        self.mlp = MLP(cfg, grid, seed, name + ".mlp")
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        x = x + self.dropout(self.attn(self.ln1(x)))
        return x + self.dropout(self.mlp(self.ln2(x)))


class OutputHead(nn.Module):
    """Final LayerNorm, logits against this rank's vocabulary slice, per-token loss."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid):
        super().__init__()
        self.ln = layer_norm(cfg.hidden)
        self.group = grid.group("tp")

    def forward(self, x, word: VocabParallelEmbedding, targets):
        logits = F.linear(copy_to_tensor_parallel(self.ln(x), self.group), word.weight)
        return vocab_parallel_cross_entropy(logits, targets, self.group, word.first_row)


class GPT(nn.Module):
    """The blocks in `layers` (default: all), with the embedding when the slice starts at block
    0 and the output head when it ends at the last block. Forward takes tokens (or the previous
    stage's hidden states) and returns the mean loss (or hidden states for the next stage)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, grid: ProcessGrid, seed: int,
                 layers: range | None = None):
        super().__init__()
        layers = range(cfg.layers) if layers is None else layers
        self.cfg, self.vocab_size = cfg, vocab_size
        self.embedding = Embedding(cfg, vocab_size, grid, seed) if layers.start == 0 else None
        self.blocks = nn.ModuleDict({str(i): Block(cfg, grid, seed, i) for i in layers})
        self.head = OutputHead(cfg, grid) if layers.stop == cfg.layers else None
        if self.head is not None and self.embedding is None:
            # Last stage without the embedding: its own copy of the tied weight, kept equal by
            # summing gradients over the `embedding` group (pipeline issue).
            self.output_word = VocabParallelEmbedding(
                vocab_size, cfg.hidden, grid=grid, name="embedding.word", seed=seed,
                std=cfg.init_std)
            self.output_word.weight.duplicate_of = "embedding.word.weight"

    def forward(self, inputs, targets=None):
        x = self.embedding(inputs) if self.embedding is not None else inputs
        for block in self.blocks.values():
            x = block(x)
        if self.head is None:
            return x
        word = self.embedding.word if self.embedding is not None else self.output_word
        return self.head(x, word, targets).mean()


def counts_in_global_norm(param: nn.Parameter, grid: ProcessGrid) -> bool:
    """Count each distinct weight once across the model-parallel group: TP-replicated ones on
    TP rank 0 only, a pipeline stage's copy of the tied embedding not at all."""
    if getattr(param, "duplicate_of", None):
        return False
    return param.tp_dim is not None or grid.tp_rank == 0


def full_state_dict(model: GPT, grid: ProcessGrid) -> dict[str, torch.Tensor]:
    """Every parameter of this stage gathered over TP to its full (global) shape."""
    group = grid.group("tp")
    tp = comm.group_size(group)
    full = {}
    for name, param in model.named_parameters():
        tensor = param.detach()
        if param.tp_dim is not None and tp > 1:
            parts = [torch.empty_like(tensor) for _ in range(tp)]
            torch.distributed.all_gather(parts, tensor.contiguous(), group=group)
            tensor = torch.cat(parts, dim=param.tp_dim)
        full[name] = tensor.clone()
    return full


def count_parameters(cfg: ModelConfig, vocab_size: int) -> int:
    """Parameters of the whole (unsharded) model, tied embedding counted once."""
    h, f, layers = cfg.hidden, cfg.ffn, cfg.layers
    per_block = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h
    return vocab_size * h + cfg.seq_len * h + layers * per_block + 2 * h
