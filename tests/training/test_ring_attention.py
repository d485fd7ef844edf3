"""Ring attention (parallel/ring_attention.py) on 2 and 4 real processes equals one process's
attention on the whole sequence: each rank's output slice and its q/k/v gradients (fp32,
1e-5), with Megatron's load-balanced chunks — causal, with packed documents kept apart, and
with attention dropout (against the same masks applied by autograd), and with one KV head
for three query heads (multi-query: K/V travel unrepeated). The bytes it saves for
the backward fall as 1/CP. gloo over loopback; each CP size is one launch."""

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from training.launch import launch
from training.parallel.comm import SOLO
from training.parallel.context import (
    RingAttention,
    load_balanced_positions,
    slice_sequence,
)
from training.parallel.ring_attention import dropout_keep, dropout_seed

SEQ, P_DROP, STREAM = 16, 0.3, 1234
CASES = ("causal", "documents", "dropout", "multi_query")
EODS = [(0, 3), (0, 9), (1, 12)]  # (sample, position) of each planted document end


def full_problem():
    generator = torch.Generator().manual_seed(5)
    return tuple(torch.randn(2, 3, SEQ, 8, generator=generator) for _ in range(4))


def document_ids() -> torch.Tensor:
    ends = torch.zeros(2, SEQ, dtype=torch.long)
    for sample, position in EODS:
        ends[sample, position] = 1
    return torch.cumsum(ends, dim=1) - ends  # a document's EOD belongs to it


def full_keep(cp: int) -> torch.Tensor:
    """The whole [batch, heads, seq, seq] keep-mask that the cp ranks' blocks draw (each rank
    drawing its seed from the stream STREAM, as `run_case` seeds it)."""
    torch.manual_seed(STREAM)
    seed = dropout_seed(torch.device("cpu"))
    keep = torch.zeros(2, 3, SEQ, SEQ, dtype=torch.bool)
    positions = [load_balanced_positions(SEQ, cp, r) for r in range(cp)]
    for q_rank in range(cp):
        for k_rank in range(cp):
            block = dropout_keep(seed, q_rank, k_rank, cp, (2, 3, SEQ // cp, SEQ // cp),
                                 P_DROP, torch.device("cpu"))
            rows, cols = positions[q_rank], positions[k_rank]
            keep[:, :, rows[:, None], cols[None, :]] = block
    return keep


def problem(case: str) -> tuple:
    """q, k, v, weight; one KV head (the first) for the multi-query case."""
    q, k, v, weight = full_problem()
    if case == "multi_query":
        k, v = k[:, :1].contiguous(), v[:, :1].contiguous()
    return q, k, v, weight


def reference(cp: int, case: str) -> list[tuple]:
    q, k, v, weight = (t.requires_grad_(i < 3) for i, t in enumerate(problem(case)))
    causal = torch.ones(SEQ, SEQ, dtype=torch.bool).tril()
    if case == "causal":
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    elif case == "documents":
        ids = document_ids()
        mask = ((ids[:, :, None] == ids[:, None, :]) & causal).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    elif case == "multi_query":
        out = F.scaled_dot_product_attention(q, k.expand_as(q), v.expand_as(q), is_causal=True)
    else:
        scores = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).masked_fill(~causal, -1e30)
        out = (scores.softmax(-1) * full_keep(cp) / (1 - P_DROP)) @ v
    (out * weight).sum().backward()
    return [tuple(slice_sequence(t, cp, r, dim=2) for t in (out, q.grad, k.grad, v.grad))
            for r in range(cp)]


def run_case(core, rank: int, cp: int, case: str) -> tuple:
    q, k, v, weight = (slice_sequence(t, cp, rank, dim=2) for t in problem(case))
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    dropout = P_DROP if case == "dropout" else 0.0
    mask = document_ids() if case == "documents" else None
    torch.manual_seed(STREAM)  # the same seed on every rank: the blocks' masks are under test
    out = core(q, k, v, dropout, mask)
    (out * weight).sum().backward()
    return tuple(t.detach() for t in (out, q.grad, k.grad, v.grad))


def saved_bytes(core, cp: int) -> int:
    """Bytes autograd keeps for one call's backward: q, k, v of a [1, 4, 64, 16] problem's
    local slice go in, the inputs' own storage included."""
    q, k, v = (torch.randn(1, 4, 64 // cp, 16, requires_grad=True) for _ in range(3))
    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = core(q, k, v)
    out.sum().backward()
    return sum(storages.values())


def ring_worker() -> dict:
    dist.init_process_group("gloo")
    rank, cp = dist.get_rank(), dist.get_world_size()
    core = RingAttention(dist.group.WORLD, list(range(cp)), rank)
    results = {case: run_case(core, rank, cp, case) for case in CASES}
    results["saved_bytes"] = saved_bytes(RingAttention(dist.group.WORLD, list(range(cp)), rank),
                                         cp)
    dist.destroy_process_group()
    return results


def test_load_balanced_chunks():
    assert load_balanced_positions(8, 2, 0).tolist() == [0, 1, 6, 7]
    assert load_balanced_positions(8, 2, 1).tolist() == [2, 3, 4, 5]
    assert slice_sequence(torch.arange(8)[None], 2, 1).tolist() == [[2, 3, 4, 5]]


@pytest.fixture(scope="module")
def one_rank_bytes() -> int:
    return saved_bytes(RingAttention(SOLO, [0], 0), 1)


@pytest.mark.parametrize("cp", [2, 4])
def test_ring_attention_equals_one_process_and_saves_one_cpth(cp, one_rank_bytes):
    results = launch(cp, ring_worker)
    for case in CASES:
        expected = reference(cp, case)
        for rank in range(cp):
            for name, got, want in zip(("out", "dq", "dk", "dv"), results[rank][case],
                                       expected[rank], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5,
                                           msg=f"{case}: rank {rank} {name}")
    # q, k, v, the output and the log-sum-exp of the local slice: nothing received is kept
    assert one_rank_bytes == 4 * 4 * 64 * 16 * 4 + 4 * 64 * 4
    for rank in range(cp):
        assert results[rank]["saved_bytes"] * cp == one_rank_bytes, rank
