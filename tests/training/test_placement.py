"""Every parameter's placement record (training/parallel/placement.py) on each rank of small
TP x PP x DP x EP layouts, built in one process (records are rank arithmetic, no collective):
the records a dense, grouped-query, tied, sequence-parallel MoE model gets; the gradient sums
and reduction groups they give; every distinct element counted once in the global norm and
written once in a checkpoint, over all ranks together."""

import itertools
import math

import pytest
import torch

from training.config import ModelConfig
from training.model import GPT, split_layers
from training.parallel.grid import GridLayout, ProcessGrid
from training.parallel.placement import (
    Placement,
    counts_in_norm,
    global_box,
    placement,
    pre_reductions,
    reduce_groups,
    writes_in_checkpoint,
)

MODEL = ModelConfig(arch="llama", layers=2, hidden=16, heads=4, kv_heads=1, seq_len=8,
                    tie_embeddings=True,
                    moe={"experts": 4, "top_k": 2, "ffn": 8, "router": "softmax_topk",
                         "every": 2})  # block 0 MoE, block 1 dense
VOCAB = 32


def rank_models(layout: GridLayout, sequence_parallel: bool):
    """(grid, model) of every rank of `layout`."""
    stages = split_layers(MODEL.layers, layout.pp)
    for rank in range(layout.world_size):
        grid = ProcessGrid(layout, rank, torch.device("cpu"))
        yield grid, GPT(MODEL, VOCAB, grid, seed=1, chunks=[stages[grid.pp_rank]],
                        sequence_parallel=sequence_parallel)


TP = ("tp",)
DENSE_SPLIT = {0: Placement(shards=(("tp", 0),)), 1: Placement(shards=(("tp", 1),))}


def expected_record(name: str, layout: GridLayout, sequence_parallel: bool) -> Placement:
    """What each parameter of MODEL is, written out by hand (TP > 1)."""
    tp_sum = "tp" if sequence_parallel else None
    if name.endswith("experts.fc"):  # experts split over EP, rows over ETP
        etp = (("etp", 1),) if layout.etp > 1 else ()
        return Placement(shards=(("ep", 0), *etp), replicated_over=() if etp else ("etp",),
                         reduce_over="edp")
    if name.endswith("experts.proj"):
        etp = (("etp", 2),) if layout.etp > 1 else ()
        return Placement(shards=(("ep", 0), *etp), replicated_over=() if etp else ("etp",),
                         reduce_over="edp")
    if name == "embedding.word.weight":
        return Placement(shards=(("tp", 0),), grad_sum="embedding" if layout.pp > 1 else None)
    if name == "output_word.weight":
        return Placement(shards=(("tp", 0),), grad_sum="embedding",
                         stored_as="embedding.word.weight")
    if name.endswith("attn.kv.weight"):  # one KV head, replicated over TP: partial gradient
        return Placement(replicated_over=TP, grad_sum="tp")
    if name.endswith("attn.q.weight") or name.endswith("mlp.fc.weight"):
        return DENSE_SPLIT[0]
    if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
        return DENSE_SPLIT[1]
    if name.endswith("router"):  # each TP rank routes its own share of the tokens
        return Placement(replicated_over=TP, grad_sum="tp")
    assert ".ln" in name, name  # norm gains: replicated, fed a sequence shard under SP
    return Placement(replicated_over=TP, grad_sum=tp_sum)


LAYOUTS = [  # (layout, sequence parallelism)
    (GridLayout(tp=2, pp=2, dp=2, ep=2), True),
    (GridLayout(tp=2, pp=1, dp=1, ep=2), False),
    (GridLayout(tp=2, pp=1, dp=2, ep=2, etp=2), True),
]


@pytest.mark.parametrize("layout,sequence_parallel", LAYOUTS)
def test_each_parameter_gets_its_record(layout, sequence_parallel):
    for grid, model in rank_models(layout, sequence_parallel):
        for name, param in model.named_parameters():
            assert placement(param) == expected_record(name, layout, sequence_parallel), \
                (grid.rank, name)


@pytest.mark.parametrize("layout,sequence_parallel", LAYOUTS)
def test_gradient_groups_follow_the_records(layout, sequence_parallel):
    """(parameter, group) pairs: the TP / embedding sums before the reduction, and the group
    that averages each gradient (experts over expert-DP, divided by dp x cp all the same)."""
    for grid, model in rank_models(layout, sequence_parallel):
        params = dict(model.named_parameters())
        pre = pre_reductions(params.values(), grid)
        summed = {name: ("tp" if pre[p].in_backward else "embedding")
                  for name, p in params.items() if p in pre}
        assert summed == {name: expected_record(name, layout, sequence_parallel).grad_sum
                          for name in params
                          if expected_record(name, layout, sequence_parallel).grad_sum}
        groups = reduce_groups(params.values(), grid)
        _, edp_rank, _, _ = grid.moe_coords
        for name, param in params.items():
            reduce = groups[param]
            if "experts" in name:
                edp = layout.tp * layout.dp // (layout.ep * layout.etp)
                assert (reduce.rank, reduce.size) == (edp_rank, edp), name
            else:
                assert (reduce.rank, reduce.size) == (grid.dp_cp_rank, layout.dp), name
            assert reduce.divisor == layout.dp * layout.cp
        names = {placement(param).reduce_over for param in params.values()}
        assert len({id(group) for group in groups.values()}) == len(names)  # one per group


def coverage(layout, sequence_parallel, chosen) -> dict[str, torch.Tensor]:
    """Per global parameter, how many times each element is chosen over all ranks."""
    counts: dict[str, torch.Tensor] = {}
    for grid, model in rank_models(layout, sequence_parallel):
        for order, (name, param) in enumerate(model.named_parameters()):
            shape, offset = global_box(param, grid)
            stored = placement(param).stored_as or name
            hits = counts.setdefault(stored, torch.zeros(shape, dtype=torch.int64))
            assert list(hits.shape) == shape, name
            if chosen(param, grid, order):
                box = tuple(slice(o, o + n) for o, n in zip(offset, param.shape, strict=True))
                hits[box] += 1
    return counts


@pytest.mark.parametrize("layout,sequence_parallel", LAYOUTS)
@pytest.mark.parametrize("sharded", [False, True])
def test_every_element_counts_once_in_the_norm(layout, sequence_parallel, sharded):
    """Summed over the world, each distinct element is counted once; with ZeRO-sharded
    gradients each replica counts its own shard, so a whole replica is counted `dp` times
    here (the shards tile it once)."""
    counts = coverage(layout, sequence_parallel,
                      lambda param, grid, _: counts_in_norm(param, grid, sharded))
    for name, hits in counts.items():
        replicas = 1
        if sharded:
            replicas = (layout.tp * layout.dp // (layout.ep * layout.etp)
                        if "experts" in name else layout.dp * layout.cp)
        assert bool((hits == replicas).all()), (name, hits.unique())


@pytest.mark.parametrize("layout,sequence_parallel", LAYOUTS)
def test_a_checkpoint_writes_every_element_once(layout, sequence_parallel):
    """Replicated optimizer state (ZeRO 0): each global element is written by exactly one
    rank, the parameters spread round-robin over their replicas."""
    counts = coverage(layout, sequence_parallel,
                      lambda param, grid, order: writes_in_checkpoint(param, grid, order, False))
    for name, hits in counts.items():
        assert bool((hits == 1).all()), (name, hits.unique())
    assert sum(math.prod(h.shape) for h in counts.values()) > 0


def test_a_parameter_without_a_record_is_named():
    with pytest.raises(AttributeError, match=r"shape \(2, 3\) has no placement"):
        placement(torch.nn.Parameter(torch.zeros(2, 3)))


def test_records_are_frozen():
    record = Placement()
    with pytest.raises(AttributeError):
        record.reduce_over = "edp"
    assert list(itertools.chain(record.shards)) == []
