"""Ring attention (parallel/context.py) on 2 and 4 real processes equals one process's causal
attention on the whole sequence: each rank's output slice and its q/k/v gradients (fp32,
1e-5), with Megatron's load-balanced chunks. gloo over loopback."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.launch import launch
from training.parallel.context import (
    RingAttention,
    load_balanced_positions,
    slice_sequence,
)

SEQ = 16


def full_problem():
    generator = torch.Generator().manual_seed(5)
    q, k, v, weight = (torch.randn(2, 3, SEQ, 8, generator=generator) for _ in range(4))
    return q, k, v, weight


def reference(cp: int) -> list[tuple]:
    q, k, v, weight = (t.requires_grad_(i < 3) for i, t in enumerate(full_problem()))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    (out * weight).sum().backward()
    return [tuple(slice_sequence(t, cp, r, dim=2) for t in (out, q.grad, k.grad, v.grad))
            for r in range(cp)]


def ring_worker() -> tuple:
    dist.init_process_group("gloo")
    rank, cp = dist.get_rank(), dist.get_world_size()
    q, k, v, weight = (slice_sequence(t, cp, rank, dim=2) for t in full_problem())
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    core = RingAttention(dist.group.WORLD, list(range(cp)), rank)
    out = core(q, k, v)
    (out * weight).sum().backward()
    result = tuple(t.detach() for t in (out, q.grad, k.grad, v.grad))
    dist.destroy_process_group()
    return result


def test_load_balanced_chunks():
    assert load_balanced_positions(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert load_balanced_positions(8, 2, 1).tolist() == [2, 3, 4, 5]
    assert slice_sequence(torch.arange(8)[None], 2, 1).tolist() == [[2, 3, 4, 5]]


@pytest.mark.parametrize("cp", [2, 4])
def test_ring_attention_equals_full_causal_attention(cp):
    results = launch(cp, ring_worker)
    expected = reference(cp)
    for rank in range(cp):
        for name, got, want in zip(("out", "dq", "dk", "dv"), results[rank], expected[rank],
                                   strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"rank {rank} {name}")
