"""A GPT built from Megatron's tensor-parallel layers: embedding -> blocks -> final LN + tied
output, as a sequence that a pipeline stage can own a contiguous slice of.

Pre-LayerNorm blocks, GELU MLP, learned positions, causal attention through
`scaled_dot_product_attention`. QKV and MLP-in are column-parallel, attention-out and MLP-out
row-parallel; the output layer multiplies by this rank's vocabulary slice of the word
embedding and the vocabulary-parallel cross-entropy takes it from there.

A pipeline rank builds one `GPT` over its model chunks (one layer range per virtual stage) and
runs `forward(..., chunk=c)`. With sequence parallelism the residual stream between the linears
is [batch, seq / tp, hidden]; every TP-replicated parameter then sees only its shard's gradient
and is marked `sequence_parallel` for a TP all-reduce after the backward. `recompute` trades
compute for activation memory: `full` reruns each block in the backward, `selective` only the
attention core (QK^T, softmax, AV). Dropout on a rank's own heads or sequence shard runs in
the tensor-parallel RNG region (parallel/rng.py).

Parameter names are global (`blocks.17.mlp.fc.weight` on whichever stage owns block 17) and
seed each weight's initialisation, so the model is the same for any TP or PP split.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from training.config import ModelConfig
from training.parallel import comm
from training.parallel.grad_buckets import PreReduction
from training.parallel.grid import ProcessGrid
from training.parallel.rng import RegionDropout, dropout_region
from training.parallel.tensor import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    copy_to_tensor_parallel,
    gather_from_sequence_parallel,
    seeded_normal,
    sequence_shard,
    tp_parameter,
    vocab_parallel_cross_entropy,
)


def layer_norm(hidden: int) -> nn.LayerNorm:
    norm = nn.LayerNorm(hidden)
    norm.weight.tp_dim = norm.bias.tp_dim = None
    return norm


class Embedding(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, grid: ProcessGrid, seed: int,
                 sequence_parallel: bool):
        super().__init__()
        self.word = VocabParallelEmbedding(vocab_size, cfg.hidden, grid=grid, name="embedding.word",
                                           seed=seed, std=cfg.init_std,
                                           sequence_parallel=sequence_parallel)
        self.position = tp_parameter(
            seeded_normal((cfg.seq_len, cfg.hidden), cfg.init_std, seed, "embedding.position"),
            tp_dim=None)
        self.dropout = RegionDropout(cfg.dropout, sequence_parallel, grid.tp_rank, grid.device)
        self.sequence_parallel, self.tp_rank = sequence_parallel, grid.tp_rank

    def forward(self, tokens, position_ids=None):
        if position_ids is None:
            position = self.position[: tokens.shape[1]].unsqueeze(0)
        else:  # positions restart in every document of a packed sample
            position = self.position[position_ids]
        if self.sequence_parallel:
            position = sequence_shard(position, self.word.group, self.tp_rank)
        return self.dropout(self.word(tokens) + position)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
                 sequence_parallel: bool, recompute_core: bool):
        super().__init__()
        self.heads = cfg.heads // grid.layout.tp
        self.head_dim = cfg.hidden // cfg.heads
        self.dropout = cfg.dropout
        self.recompute_core = recompute_core
        self.tp_rank, self.device = grid.tp_rank, grid.device
        # QKV rows are laid out head-major ([head][q|k|v][head_dim]) so that a contiguous
        # column-parallel slice holds whole heads.
        self.qkv = ColumnParallelLinear(cfg.hidden, 3 * cfg.hidden, grid=grid, name=name + ".qkv",
                                        seed=seed, std=cfg.init_std,
                                        sequence_parallel=sequence_parallel)
        self.proj = RowParallelLinear(cfg.hidden, cfg.hidden, grid=grid, name=name + ".proj",
                                      seed=seed, std=cfg.init_std / math.sqrt(2 * cfg.layers),
                                      sequence_parallel=sequence_parallel)

    def core(self, q, k, v, mask=None):
        """QK^T, causal softmax, dropout, AV: the part selective recomputation reruns. `mask`
        (bool [batch, 1, seq, seq], True where a query may attend) replaces the causal mask
        when attention stays within each document."""
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None,
            dropout_p=self.dropout if self.training else 0.0)

    def forward(self, x, mask=None):
        qkv = self.qkv(x)  # with sequence parallelism x is a shard, qkv the whole sequence
        batch, seq = qkv.shape[:2]
        heads = qkv.view(batch, seq, self.heads, 3, self.head_dim)
        q, k, v = heads.permute(3, 0, 2, 1, 4).unbind(0)
        # This rank's heads: their dropout masks must not repeat another rank's. The region
        # is entered outside the checkpoint, which then stashes and replays its stream.
        with dropout_region(self.training and self.dropout > 0, self.tp_rank, self.device):
            if self.recompute_core and torch.is_grad_enabled():
                out = checkpoint(self.core, q, k, v, mask, use_reentrant=False)
            else:
                out = self.core(q, k, v, mask)
        return self.proj(out.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, name: str,
                 sequence_parallel: bool):
        super().__init__()
        self.fc = ColumnParallelLinear(cfg.hidden, cfg.ffn, grid=grid, name=name + ".fc",
                                       seed=seed, std=cfg.init_std,
                                       sequence_parallel=sequence_parallel)
        self.proj = RowParallelLinear(cfg.ffn, cfg.hidden, grid=grid, name=name + ".proj",
                                      seed=seed, std=cfg.init_std / math.sqrt(2 * cfg.layers),
                                      sequence_parallel=sequence_parallel)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, seed: int, index: int,
                 sequence_parallel: bool, recompute: str):
        super().__init__()
        name = f"blocks.{index}"
        self.ln1 = layer_norm(cfg.hidden)
        self.attn = Attention(cfg, grid, seed, name + ".attn", sequence_parallel,
                              recompute_core=recompute == "selective")
        self.ln2 = layer_norm(cfg.hidden)
        self.mlp = MLP(cfg, grid, seed, name + ".mlp", sequence_parallel)
        # the residual stream: replicated over TP, or with sequence parallelism a shard
        self.dropout = RegionDropout(cfg.dropout, sequence_parallel, grid.tp_rank, grid.device)

    def forward(self, x, mask=None):
        x = x + self.dropout(self.attn(self.ln1(x), mask))
        return x + self.dropout(self.mlp(self.ln2(x)))


class OutputHead(nn.Module):
    """Final LayerNorm, logits against this rank's vocabulary slice, per-token loss."""

    def __init__(self, cfg: ModelConfig, grid: ProcessGrid, sequence_parallel: bool):
        super().__init__()
        self.ln = layer_norm(cfg.hidden)
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
        starts = {c.start for c in self.chunks}
        ends = {c.stop for c in self.chunks}
        self.embedding = (Embedding(cfg, vocab_size, grid, seed, sequence_parallel)
                          if 0 in starts else None)
        self.blocks = nn.ModuleDict({
            str(i): Block(cfg, grid, seed, i, sequence_parallel, recompute)
            for chunk in self.chunks for i in chunk})
        self.head = OutputHead(cfg, grid, sequence_parallel) if cfg.layers in ends else None
        if self.head is not None and self.embedding is None:
            # Last stage without the embedding: its own copy of the tied weight, kept equal by
            # summing gradients over the `embedding` group.
            self.output_word = VocabParallelEmbedding(
                vocab_size, cfg.hidden, grid=grid, name="embedding.word", seed=seed,
                std=cfg.init_std)
            self.output_word.weight.duplicate_of = "embedding.word.weight"
        for param in self.parameters():
            # Replicated over TP but fed by one sequence shard: the TP sum is its gradient.
            param.sequence_parallel = sequence_parallel and param.tp_dim is None

    def chunk_parameters(self, chunk: int) -> list[nn.Parameter]:
        """The parameters model chunk `chunk` uses (its blocks, the embedding when it starts the
        model, the head and tied output weight when it ends it)."""
        layers = self.chunks[chunk]
        modules = [self.blocks[str(i)] for i in layers]
        if layers.start == 0 and self.embedding is not None:
            modules.append(self.embedding)
        if layers.stop == self.cfg.layers and self.head is not None:
            modules += [self.head, getattr(self, "output_word", None) or self.embedding.word]
        return list(dict.fromkeys(p for module in modules for p in module.parameters()))

    def forward(self, inputs, targets=None, chunk: int = 0, documents=None):
        layers = self.chunks[chunk]
        position_ids = documents.position_ids if documents is not None else None
        mask = documents.attention_mask if documents is not None else None
        x = self.embedding(inputs, position_ids) if layers.start == 0 else inputs
        for i in layers:
            block = self.blocks[str(i)]
            if self.recompute_blocks and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        if layers.stop != self.cfg.layers:
            return x
        word = self.embedding.word if self.embedding is not None else self.output_word
        losses = self.head(x, word, targets)
        if documents is None or documents.loss_mask is None:
            return losses.mean()
        return (losses * documents.loss_mask).sum() / documents.loss_mask.sum().clamp_min(1.0)


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


def pre_reductions(model: GPT, grid: ProcessGrid) -> dict[nn.Parameter, PreReduction]:
    """Gradients summed over a model-parallel group before the DP reduction: the tied word
    embedding's two copies (first and last stage; deferred to after the backward, the stages
    finish at different times), and with sequence parallelism the TP-replicated weights that
    each saw one sequence shard (inside the backward: TP ranks run the same one)."""
    found = {}
    embedding = grid.group("embedding")
    if comm.group_size(embedding) > 1:
        tied = PreReduction(embedding, in_backward=False)
        for module in (getattr(model.embedding, "word", None),
                       getattr(model, "output_word", None)):
            if module is not None:
                found[module.weight] = tied
    tp_sum = PreReduction(grid.group("tp"), in_backward=True)
    for param in model.parameters():
        if param.sequence_parallel and param not in found:
            found[param] = tp_sum
    return found


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
            stacked = tensor.new_empty((tp * tensor.shape[0], *tensor.shape[1:]))
            comm.all_gather_into(stacked, tensor.contiguous(), group)
            tensor = torch.cat(stacked.chunk(tp), dim=param.tp_dim)
        full[name] = tensor.clone()
    return full


def count_parameters(cfg: ModelConfig, vocab_size: int) -> int:
    """Parameters of the whole (unsharded) model, tied embedding counted once."""
    h, f, layers = cfg.hidden, cfg.ffn, cfg.layers
    per_block = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h
    return vocab_size * h + cfg.seq_len * h + layers * per_block + 2 * h
