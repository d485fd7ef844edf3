"""A GPT built from Megatron's tensor-parallel layers: embedding -> blocks -> final norm +
output layer, as a sequence that a pipeline stage can own a contiguous slice of.

Pre-norm blocks whose norm, attention and FFN come from the factories of training/blocks.py
(GPT-2: LayerNorm, learned positions, GELU MLP, tied output; Llama: RMSNorm, rotary positions,
SwiGLU, grouped-query attention, untied output). Attention-in and FFN-in are column-parallel,
attention-out and FFN-out row-parallel; the output layer multiplies by this rank's vocabulary
slice of the word embedding (or of the untied output weight) and the vocabulary-parallel
cross-entropy takes it from there.

A pipeline rank builds one `GPT` over its model chunks (one layer range per virtual stage) and
runs `forward(..., chunk=c)`. With sequence parallelism the residual stream between the linears
is [batch, seq / tp, hidden]; every TP-replicated parameter then sees only its shard's gradient
and its placement record (parallel/placement.py) sums it over TP after the backward.
`recompute` trades compute for activation memory: `full` reruns each block in the backward,
`selective` only the attention core (QK^T, softmax, AV). Dropout on a rank's own heads or
sequence shard runs in the tensor-parallel RNG region (parallel/rng.py).

Parameter names are global (`blocks.17.mlp.fc.weight` on whichever stage owns block 17) and
seed each weight's initialisation, so the model is the same for any TP or PP split.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.blocks import AttentionCore, causal_core, make_attention, make_ffn, make_norm
from training.config import ModelConfig
from training.moe.layer import recompute_context
from training.parallel.context import RingAttention, load_balanced_positions
from training.parallel.grid import ProcessGrid
from training.parallel.placement import amend, full_tensor, placement
from training.parallel.rng import RegionDropout, region_stream
from training.parallel.tensor import (
    VocabParallelEmbedding,
    copy_to_tensor_parallel,
    gather_from_sequence_parallel,
    seeded_normal,
    sequence_shard,
    tp_parameter,
    vocab_parallel_cross_entropy,
)


def residual_dropout(cfg: ModelConfig, grid: ProcessGrid,
                     sequence_parallel: bool) -> RegionDropout:
    """Dropout on the residual stream: replicated over TP, or with sequence parallelism a TP
    shard; with CP each rank's own tokens (parallel/rng.py)."""
    sharded = sequence_parallel or grid.layout.cp > 1
    stream = region_stream(grid.tp_rank, grid.cp_rank, grid.layout.tp, by_tp=sequence_parallel)
    return RegionDropout(cfg.dropout, sharded, stream, grid.device)


class Embedding(nn.Module):
    """Word embedding, plus learned positions for `model.position: learned` (rotary positions
    are applied inside attention)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, grid: ProcessGrid, seed: int,
                 sequence_parallel: bool):
        super().__init__()
        self.word = VocabParallelEmbedding(vocab_size, cfg.hidden, grid=grid, name="embedding.word",
                                           seed=seed, std=cfg.init_std,
                                           sequence_parallel=sequence_parallel)
        self.position = tp_parameter(
            seeded_normal((cfg.seq_len, cfg.hidden), cfg.init_std, seed, "embedding.position"),
            tp_dim=None) if cfg.position == "learned" else None
        self.dropout = residual_dropout(cfg, grid, sequence_parallel)
        self.sequence_parallel, self.tp_rank = sequence_parallel, grid.tp_rank

    def forward(self, tokens, positions: torch.Tensor | None = None):
        """`positions`: the tokens' global positions when they are a CP slice."""
        vectors = self.word(tokens)
        if self.position is None:
            return self.dropout(vectors)
        # positions: a CP slice's [seq], or restarting in every document [batch, seq]
        table = self.position[: tokens.shape[1]] if positions is None else \
            self.position[positions]
        position = table if table.dim() == 3 else table.unsqueeze(0)
        if self.sequence_parallel:
            position = sequence_shard(position, self.word.group, self.tp_rank)
        return self.dropout(vectors + position)


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)); parts from training/blocks.py."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, index: int,
                 sequence_parallel: bool, recompute: str, core: AttentionCore = causal_core):
        super().__init__()
        name = f"blocks.{index}"
        self.ln1 = make_norm(cfg)
        self.attn = make_attention(cfg, grid, seed, name + ".attn", sequence_parallel,
                                   recompute_core=recompute == "selective", core=core)
        self.ln2 = make_norm(cfg)
        self.mlp = make_ffn(cfg, grid, seed, index, name + ".mlp", sequence_parallel)
        self.dropout = residual_dropout(cfg, grid, sequence_parallel)

    def forward(self, x, positions: torch.Tensor | None = None, mask=None):
        x = x + self.dropout(self.attn(self.ln1(x), positions, mask))
        return x + self.dropout(self.mlp(self.ln2(x)))


class OutputHead(nn.Module):
    """Final norm, logits against this rank's vocabulary slice, per-token loss."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, sequence_parallel: bool):
        super().__init__()
        self.ln = make_norm(cfg)
        self.group, self.sequence_parallel = grid.group("tp"), sequence_parallel

    def forward(self, x, word: VocabParallelEmbedding, targets):
        enter = gather_from_sequence_parallel if self.sequence_parallel else \
            copy_to_tensor_parallel
        logits = F.linear(enter(self.ln(x), self.group), word.weight)
        return vocab_parallel_cross_entropy(logits, targets, self.group, word.first_row)


class GPT(nn.Module):
    """The blocks of `chunks` (layer ranges, one per model chunk; default: all layers as one),
    with the embedding when a chunk starts at block 0 and the output head when one ends at the
    last block. `forward(x, targets, chunk, documents)` takes tokens (or the previous stage's
    hidden states) and returns the mean loss (or hidden states for the next stage);
    `documents` (training.batches.DocumentMasks) restarts positions, keeps attention within
    each document of a packed sample, or leaves tokens out of the loss."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, grid: ProcessGrid, seed: int,
                 chunks: list[range] | None = None, *, sequence_parallel: bool = False,
                 recompute: str = "none"):
        super().__init__()
        self.chunks = [range(cfg.layers)] if chunks is None else list(chunks)
        self.cfg, self.vocab_size = cfg, vocab_size
        self.recompute_blocks = recompute == "full"
        sequence_parallel = sequence_parallel and grid.layout.tp > 1
        # Context parallelism: this rank holds a load-balanced slice of every sequence, its
        # attention core passes K/V around the CP ring, positions follow the slice.
        cp = self.context_parallel = grid.layout.cp
        core = RingAttention(grid.group("cp"), grid.ranks("cp"), grid.cp_rank) if cp > 1 \
            else causal_core
        self.positions = (load_balanced_positions(cfg.seq_len, cp, grid.cp_rank, grid.device)
                          if cp > 1 else None)
        starts = {c.start for c in self.chunks}
        ends = {c.stop for c in self.chunks}
        self.embedding = (Embedding(cfg, vocab_size, grid, seed, sequence_parallel)
                          if 0 in starts else None)
        self.blocks = nn.ModuleDict({
            str(i): Block(cfg, grid, seed, i, sequence_parallel, recompute, core)
            for chunk in self.chunks for i in chunk})
        self.head = OutputHead(cfg, grid, sequence_parallel) if cfg.layers in ends else None
        if self.head is not None and not cfg.tie_embeddings:
            self.output = VocabParallelEmbedding(  # an untied output layer, vocabulary-parallel
                vocab_size, cfg.hidden, grid=grid, name="output", seed=seed, std=cfg.init_std)
        elif self.head is not None and self.embedding is None:
            # Last stage without the embedding: its own copy of the tied weight, kept equal by
            # summing gradients over the `embedding` group.
            self.output_word = VocabParallelEmbedding(
                vocab_size, cfg.hidden, grid=grid, name="embedding.word", seed=seed,
                std=cfg.init_std)
            amend(self.output_word.weight, stored_as="embedding.word.weight")
        if sequence_parallel:
            # Replicated over TP but fed by one sequence shard: the TP sum is its gradient.
            # (Experts are not: every token an expert saw reached it through the dispatcher.)
            for param in self.parameters():
                if "tp" in placement(param).replicated_over:
                    amend(param, grad_sum="tp")
        if grid.layout.pp > 1 and cfg.tie_embeddings:
            # the tied word embedding's copies on the first and last stage each saw one end of
            # the model: their gradients are summed over the `embedding` group
            for module in (getattr(self.embedding, "word", None),
                           getattr(self, "output_word", None)):
                if module is not None:
                    amend(module.weight, grad_sum="embedding")

    def chunk_parameters(self, chunk: int) -> list[nn.Parameter]:
        """The parameters model chunk `chunk` uses (its blocks, the embedding when it starts the
        model, the head and tied output weight when it ends it)."""
        layers = self.chunks[chunk]
        modules = [self.blocks[str(i)] for i in layers]
        if layers.start == 0 and self.embedding is not None:
            modules.append(self.embedding)
        if layers.stop == self.cfg.layers and self.head is not None:
            modules += [self.head, self.output_layer()]
        return list(dict.fromkeys(p for module in modules for p in module.parameters()))

    def forward(self, inputs, targets=None, chunk: int = 0, documents=None):
        layers = self.chunks[chunk]
        # documents kept apart: their own positions and mask (under CP: the document ids)
        positions = documents.position_ids if documents is not None else None
        positions = self.positions if positions is None else positions
        mask = None if documents is None else \
            documents.document_ids if self.context_parallel > 1 else documents.attention_mask
        x = self.embedding(inputs, positions) if layers.start == 0 else inputs
        for i in layers:
            block = self.blocks[str(i)]
            if self.recompute_blocks and torch.is_grad_enabled():
                x = checkpoint(block, x, positions, mask, use_reentrant=False,
                               context_fn=recompute_context)
            else:
                x = block(x, positions, mask)
        if layers.stop != self.cfg.layers:
            return x
        losses = self.head(x, self.output_layer(), targets)
        if documents is None or documents.loss_mask is None:
            return losses.mean()
        tokens = documents.loss_tokens if documents.loss_tokens is not None else \
            documents.loss_mask.sum().clamp_min(1.0)
        return (losses * documents.loss_mask).sum() / tokens

    def output_layer(self) -> VocabParallelEmbedding:
        """The weight the logits multiply by: the untied output layer, or the (copy of the)
        word embedding."""
        for name in ("output", "output_word"):
            if hasattr(self, name):
                return getattr(self, name)
        return self.embedding.word


def split_layers(layers: int, stages: int) -> list[range]:
    """Contiguous layer ranges for `stages` pipeline stages. An uneven remainder goes to the
    inner stages first: the first carries the embedding, the last the output layer and loss."""
    base, extra = divmod(layers, stages)
    preference = list(range(1, stages - 1)) + [0, stages - 1][: stages]
    sizes = [base + (stage in preference[:extra]) for stage in range(stages)]
    starts = [sum(sizes[:stage]) for stage in range(stages)]
    return [range(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def saved_activation_bytes(run: Callable[[], torch.Tensor], model: nn.Module) -> int:
    """Bytes autograd keeps from the forward `run()` for its backward (parameters excluded):
    the activation memory a micro-batch holds until its backward, which recomputation exists
    to lower. Each storage counts once, however many saved views share it. (A checkpointed
    region's inputs count: torch saves them through the same hooks.)"""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = run()
    loss.backward()
    return sum(storages.values())


def full_state_dict(model: GPT, grid: ProcessGrid) -> dict[str, torch.Tensor]:
    """Every parameter of this stage gathered over TP (experts over ETP and EP) to its full
    (global) shape."""
    return {name: full_tensor(param, grid).clone() for name, param in model.named_parameters()}


def count_parameters(cfg: ModelConfig, vocab_size: int) -> int:
    """Parameters of the whole (unsharded) model, a tied embedding counted once."""
    h, f, layers = cfg.hidden, cfg.ffn, cfg.layers
    kv = 2 * cfg.kv * (h // cfg.heads)
    gated = 2 if cfg.mlp == "swiglu" else 1
    norm = 2 * h if cfg.norm == "layernorm" and cfg.bias else h
    bias = (h + kv + h + gated * f + h) if cfg.bias else 0
    per_block = h * (h + kv) + h * h + gated * f * h + f * h + bias + 2 * norm
    embeddings = vocab_size * h * (1 if cfg.tie_embeddings else 2)
    positions = cfg.seq_len * h if cfg.position == "learned" else 0
    return embeddings + positions + layers * per_block + norm
