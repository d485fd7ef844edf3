"""Dropout under tensor parallelism: masks on activations every TP rank holds whole are the
same on every rank (or the replicas drift apart); masks on a rank's own heads, or with
sequence parallelism on its own sequence shard, are its own (or two ranks' heads and shards
repeat one mask). Under context parallelism every rank's tokens draw their own masks. Real
processes at TP=2 or CP=2 on gloo."""

import pytest
import torch
import torch.distributed as dist

from training.config import ModelConfig
from training.launch import launch
from training.model import GPT
from training.parallel.context import slice_sequence
from training.parallel.grid import build_grid, destroy_grid
from training.trainer import setup_process


def dropout_outputs(sequence_parallel: bool, p: float, cp: int = 1) -> dict[str, torch.Tensor]:
    """Worker at TP=2 (or CP=2): what the embedding dropout, the residual dropout and the
    attention core put out in one training forward. The QKV weights are zeroed and every
    head's values set to 1, so each head's output is a function of its dropout mask alone."""
    setup_process()
    grid = build_grid(2 // cp, 1, 1, cp=cp)
    torch.manual_seed(11)  # the default stream, as the trainer seeds it: alike on TP ranks
    cfg = ModelConfig(layers=1, hidden=32, heads=4, seq_len=16, dropout=p)
    model = GPT(cfg, 64, grid, seed=3, sequence_parallel=sequence_parallel).train()
    attn = model.blocks["0"].attn
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.view(attn.heads, 3, attn.head_dim)[:, 2] = 1.0
    seen = {}
    model.embedding.dropout.register_forward_hook(
        lambda m, i, out: seen.setdefault("embedding", out.detach()))
    model.blocks["0"].dropout.register_forward_hook(
        lambda m, i, out: seen.setdefault("residual", out.detach()))
    attn.proj.register_forward_pre_hook(lambda m, args: seen.setdefault("heads", args[0].detach()))
    tokens = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(0))
    model(*(slice_sequence(t, cp, grid.cp_rank) for t in (tokens[:, :-1], tokens[:, 1:])))
    dist.barrier()
    destroy_grid()
    return seen


def across_ranks(sequence_parallel: bool, p: float = 0.5) -> dict[str, bool]:
    """For each dropout site: do the two TP ranks draw the same mask?"""
    outputs = launch(2, dropout_outputs, sequence_parallel, p)
    same = {}
    for site in ("embedding", "residual"):
        masks = [outputs[rank][site] != 0 for rank in (0, 1)]
        assert masks[0].shape == masks[1].shape
        same[site] = torch.equal(*masks)
    same["heads"] = torch.equal(outputs[0]["heads"], outputs[1]["heads"])
    return same


@pytest.mark.slow
def test_without_dropout_the_ranks_agree_everywhere():
    """The control: with p=0 the rigged heads put out the same values on both ranks."""
    assert across_ranks(sequence_parallel=False, p=0.0) == {
        "embedding": True, "residual": True, "heads": True}


def test_replicated_activations_share_masks_and_heads_do_not():
    assert across_ranks(sequence_parallel=False) == {
        "embedding": True, "residual": True, "heads": False}


def test_sequence_shards_draw_their_own_masks():
    assert across_ranks(sequence_parallel=True) == {
        "embedding": False, "residual": False, "heads": False}


def test_context_parallel_ranks_draw_their_own_masks():
    """CP ranks hold other tokens: with one stream their masks would repeat each other's."""
    outputs = launch(2, dropout_outputs, False, 0.5, 2)
    for site in ("embedding", "residual"):
        masks = [outputs[rank][site] != 0 for rank in (0, 1)]
        assert masks[0].shape == masks[1].shape
        assert not torch.equal(*masks), site
