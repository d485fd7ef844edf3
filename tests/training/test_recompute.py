"""Activation recomputation: `full` and `selective` compute the same loss and gradients as
none (dropout masks included: the checkpoint replays the RNG), and lower what autograd keeps
from the forward for the backward, measured with saved-tensor hooks."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from training.config import ModelConfig
from training.model import GPT, saved_activation_bytes
from training.parallel.grid import build_grid, destroy_grid


@pytest.fixture(scope="module")
def grid():
    yield build_grid(1, 1, 1)
    destroy_grid()


def run(grid, recompute: str, dropout: float):
    cfg = ModelConfig(layers=3, hidden=32, heads=4, seq_len=32, dropout=dropout)
    model = GPT(cfg, 64, grid, seed=3, recompute=recompute)
    tokens = torch.randint(0, 64, (4, 33), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    losses = []

    def forward():
        losses.append(model(tokens[:, :-1], tokens[:, 1:]))
        return losses[-1]

    saved = saved_activation_bytes(forward, model)
    grads = {name: param.grad.clone() for name, param in model.named_parameters()}
    return losses[0].item(), grads, saved


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_recompute_changes_memory_not_math(grid, dropout):
    loss, grads, saved = run(grid, "none", dropout)
    results = {mode: run(grid, mode, dropout) for mode in ("selective", "full")}
    for mode, (other_loss, other_grads, _) in results.items():
        assert other_loss == pytest.approx(loss, rel=1e-6), mode
        for name, grad in grads.items():
            torch.testing.assert_close(other_grads[name], grad, rtol=1e-5, atol=1e-7,
                                       msg=f"{mode}: {name}")
    selective, full = results["selective"][2], results["full"][2]
    # selective drops the attention core's saved output and softmax statistics; full keeps
    # only each block's input.
    assert full < selective < saved
    assert full < saved / 3


def test_selective_drops_the_quadratic_softmax_of_an_unfused_core(grid):
    """With the unfused (math) attention kernel the core saves the [batch, heads, seq, seq]
    probabilities; selective recomputation is exactly that much lighter per layer."""
    with sdpa_kernel(SDPBackend.MATH):
        none, selective = run(grid, "none", 0.0)[2], run(grid, "selective", 0.0)[2]
    batch, heads, seq, layers = 4, 4, 32, 3
    assert none - selective >= layers * batch * heads * seq * seq * 4


def test_saved_bytes_counts_activations_not_parameters(grid):
    linear = torch.nn.Linear(8, 8, bias=False)
    x = torch.randn(5, 8, requires_grad=True)
    # linear saves its input (5 x 8 fp32) and the weight, which is a parameter
    assert saved_activation_bytes(lambda: linear(x).sum(), linear) == 5 * 8 * 4
