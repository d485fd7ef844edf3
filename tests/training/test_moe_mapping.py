"""The MoE folding of the grid's ranks (pure rank arithmetic): every MoE group kind
partitions the world, stays inside one pipeline stage, and EP folds inside TP x CP (or a
node) exactly when the paper says it should."""

import itertools

import pytest

from training.config import load_config
from training.parallel.grid import GridLayout, LayoutError


def layouts():
    for tp, cp, dp, pp, ep, etp in itertools.product((1, 2), (1, 2), (1, 2, 4), (1, 2),
                                                     (1, 2, 4), (1, 2)):
        if (tp * cp * dp) % (ep * etp) == 0:
            yield GridLayout(tp, pp, dp, cp, ep, etp)


@pytest.mark.parametrize("name", ["ep", "etp", "edp", "tp_cp"])
def test_moe_groups_partition_each_stage(name):
    for layout in layouts():
        groups = layout.groups(name)
        ranks = sorted(r for g in groups for r in g)
        assert ranks == list(range(layout.world_size)), (layout, name)
        for group in groups:  # never across pipeline stages
            assert len({layout.coords(r)[0] for r in group}) == 1, (layout, name)
        size = {"ep": layout.ep, "etp": layout.etp, "tp_cp": layout.tp * layout.cp,
                "edp": layout.tp * layout.cp * layout.dp // (layout.ep * layout.etp)}[name]
        assert {len(g) for g in groups} == {size}, (layout, name)


def test_ep_folds_inside_tp_when_it_fits():
    """TP 2 x DP 2 with EP 2, ETP 1: the EP groups are the TP groups (folded); with ETP 2
    they span DP (the classic unfolded mapping, experts' FFN split as TP's)."""
    folded, unfolded = GridLayout(2, 1, 2, ep=2), GridLayout(2, 1, 2, ep=2, etp=2)
    assert folded.groups("ep") == folded.groups("tp") == [[0, 1], [2, 3]]
    assert unfolded.groups("ep") == unfolded.groups("dp") == [[0, 2], [1, 3]]
    assert unfolded.groups("etp") == unfolded.groups("tp")


def test_mixtral_mapping_keeps_each_ep_group_in_one_node():
    """128 ranks, TP2 x DP8 x PP8 and ETP1 x EP8: each EP group is 8 adjacent ranks."""
    layout = GridLayout(2, 8, 8, ep=8)
    assert all(g == list(range(g[0], g[0] + 8)) and g[0] % 8 == 0
               for g in layout.groups("ep"))
    assert {len(g) for g in layout.groups("edp")} == {2}


@pytest.mark.parametrize("name,ranks,edp", [("mixtral_8x22b", 128, 2),
                                             ("qwen2_57b_a14b", 64, 4)])
def test_paper_configs_fold_each_ep_group_into_one_node(name, ranks, edp):
    """The shipped configs' mappings (the paper authors' published runs): every EP group
    lies inside one 8-GPU node, ETP 1."""
    p = load_config(name).parallel
    layout = GridLayout(p.tp, p.pp, p.dp, p.cp, p.ep, p.etp)
    layout.check_world(ranks)
    assert p.etp == 1 and {len(g) for g in layout.groups("edp")} == {edp}
    assert all(len({rank // 8 for rank in group}) == 1 for group in layout.groups("ep"))


def test_a_mapping_that_cannot_cover_the_stage_is_a_layout_error():
    with pytest.raises(LayoutError, match="etp \\* ep must divide"):
        GridLayout(2, 1, 3, ep=4).check_world(6)
