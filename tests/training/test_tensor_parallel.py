"""Megatron's tensor-parallel pieces equal torch's own on the full tensors, values and
gradients, on 2 real gloo ranks; and the process grid's rank arithmetic and layout errors."""

import pytest
import torch
import torch.nn.functional as F

from training.config import ModelConfig
from training.launch import launch
from training.model import GPT, full_state_dict
from training.parallel.grid import GridLayout, LayoutError, build_grid, destroy_grid
from training.parallel.tensor import (
    ColumnParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
    seeded_normal,
    vocab_parallel_cross_entropy,
)

TP = 2


def gather(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(TP)]
    torch.distributed.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def compare_with_full_tensors() -> dict[str, float]:
    """Worker: each parallel piece against torch on full tensors; returns max abs errors."""
    grid = build_grid(tp=TP, pp=1, dp=1)
    group, errors = grid.group("tp"), {}
    vocab, hidden, tokens_shape = 10, 6, (3, 5)
    tokens = torch.randint(vocab, tokens_shape, generator=torch.Generator().manual_seed(0))

    embedding = VocabParallelEmbedding(vocab, hidden, grid=grid, name="e", seed=1, std=1.0)
    full_weight = seeded_normal((vocab, hidden), 1.0, 1, "e.weight").requires_grad_()
    out = embedding(tokens)
    expected = F.embedding(tokens, full_weight)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    errors["embedding"] = (out - expected).abs().max().item()
    errors["embedding_grad"] = (gather(embedding.weight.grad, 0, group)
                                - full_weight.grad).abs().max().item()

    logits = torch.randn(*tokens_shape, vocab, generator=torch.Generator().manual_seed(2)) * 3
    logits.requires_grad_()
    local = logits.detach().chunk(TP, dim=-1)[grid.tp_rank].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(local, tokens, group, grid.tp_rank * vocab // TP)
    expected = F.cross_entropy(logits.reshape(-1, vocab), tokens.reshape(-1), reduction="none")
    weights = torch.rand(expected.shape, generator=torch.Generator().manual_seed(3))
    (loss.reshape(-1) * weights).sum().backward()
    (expected * weights).sum().backward()
    errors["cross_entropy"] = (loss.reshape(-1) - expected).abs().max().item()
    errors["cross_entropy_grad"] = (gather(local.grad, -1, group)
                                    - logits.grad).abs().max().item()

    column = ColumnParallelLinear(hidden, 8, grid=grid, name="c", seed=1, std=0.5)
    row = RowParallelLinear(8, hidden, grid=grid, name="r", seed=1, std=0.5)
    x = torch.randn(4, hidden, generator=torch.Generator().manual_seed(4), requires_grad=True)
    w1 = seeded_normal((8, hidden), 0.5, 1, "c.weight").requires_grad_()
    w2 = seeded_normal((hidden, 8), 0.5, 1, "r.weight").requires_grad_()
    x_full = x.detach().clone().requires_grad_()
    out = row(torch.tanh(column(x)))
    expected = F.linear(torch.tanh(F.linear(x_full, w1)), w2)
    (out**2).sum().backward()
    (expected**2).sum().backward()
    errors["linears"] = (out - expected).abs().max().item()
    errors["linears_input_grad"] = (x.grad - x_full.grad).abs().max().item()
    errors["column_grad"] = (gather(column.weight.grad, 0, group) - w1.grad).abs().max().item()
    errors["row_grad"] = (gather(row.weight.grad, 1, group) - w2.grad).abs().max().item()

    cfg = ModelConfig(layers=2, hidden=16, heads=4, seq_len=8)
    gathered = full_state_dict(GPT(cfg, 32, grid, seed=3), grid)
    destroy_grid()
    return {"errors": errors, "params": gathered}


@pytest.fixture(scope="module")
def results():
    return launch(TP, compare_with_full_tensors)


def test_parallel_layers_equal_full_tensor_ops(results):
    for rank, result in results.items():
        for piece, error in result["errors"].items():
            assert error < 1e-5, f"rank {rank}: {piece} differs by {error:.2e}"


def test_model_initialisation_is_independent_of_tp(results):
    """Every rank draws the full weight and keeps its slice, so TP=2 gathers to TP=1's model."""
    import torch.distributed as dist

    grid = build_grid(1, 1, 1)
    cfg = ModelConfig(layers=2, hidden=16, heads=4, seq_len=8)
    single = full_state_dict(GPT(cfg, 32, grid, seed=3), grid)
    dist.destroy_process_group()
    assert single.keys() == results[0]["params"].keys()
    for name, tensor in single.items():
        assert torch.equal(tensor, results[0]["params"][name]), name
    scaled = single["blocks.0.mlp.proj.weight"].std() / single["blocks.0.mlp.fc.weight"].std()
    assert scaled == pytest.approx(0.5, rel=0.1)  # output projections: 1 / sqrt(2 * layers)


def test_grid_ranks_tp_innermost_then_dp_then_pp():
    layout = GridLayout(tp=2, pp=2, dp=2)
    assert layout.coords(5) == (1, 0, 1)
    assert all(layout.rank(*layout.coords(r)) == r for r in range(8))
    assert layout.groups("tp") == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert layout.groups("dp") == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert layout.groups("pp") == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert layout.groups("model") == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert layout.groups("embedding") == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_layout_not_matching_world_is_a_clear_error():
    with pytest.raises(LayoutError, match=r"tp=2 x pp=1 x dp=3 = 6 ranks, but the world has 4"):
        GridLayout(2, 1, 3).check_world(4)
    with pytest.raises(LayoutError, match="world has 1"):
        build_grid(2, 1, 1)
