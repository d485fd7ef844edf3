"""MoE Parallel Folding's second mapping of the same ranks (Liu et al., 2025, sec. 3).

The attention layers see the world as TP x CP x DP x PP (grid.py); the MoE layers as
ETP x EP x EDP x PP, with ETP innermost, then EP, then EDP, over the same ranks of each
pipeline stage. With w = rank mod (tp * cp * dp), a rank's place in a stage:

    attention  w = (dp_rank * cp + cp_rank) * tp + tp_rank
    MoE        w = (edp_rank * ep + ep_rank) * etp + etp_rank,  edp = tp*cp*dp / (etp*ep)

so the two agree on which ranks form a stage and each may cut it differently. EP "folds"
inside TP x CP when etp * ep divides tp * cp: the all-to-all then stays within the ranks that
already share a micro-batch (one node), as the paper recommends; otherwise it spans DP ranks.

Groups (all rank lists of one kind partition the world):
    ep     experts split between them; tokens move by all-to-all
    etp    one expert's FFN split between them, as a TP MLP
    edp    replicas of the same expert shard: their gradients are summed
    tp_cp  the attention ranks holding pieces of one micro-batch (the router's statistics
           are summed over them)
"""

from __future__ import annotations

import itertools

MOE_GROUP_NAMES = ("ep", "etp", "edp", "tp_cp")


def per_stage(layout) -> int:
    return layout.tp * layout.cp * layout.dp


def expert_dp(layout) -> int:
    return per_stage(layout) // (layout.ep * layout.etp)


def moe_coords(layout, rank: int) -> tuple[int, int, int, int]:
    """(pp_rank, edp_rank, ep_rank, etp_rank) of a global rank."""
    pp_rank, w = divmod(rank, per_stage(layout))
    rest, etp_rank = divmod(w, layout.etp)
    edp_rank, ep_rank = divmod(rest, layout.ep)
    return pp_rank, edp_rank, ep_rank, etp_rank


def moe_groups(layout, name: str) -> list[list[int]]:
    """Every group of kind `name` as sorted rank lists."""
    stage = per_stage(layout)
    if name == "tp_cp":
        return [[pp * stage + (dp * layout.cp + cp) * layout.tp + tp
                 for cp in range(layout.cp) for tp in range(layout.tp)]
                for pp in range(layout.pp) for dp in range(layout.dp)]
    key = {"ep": lambda p, d, e, t: (p, d, t), "etp": lambda p, d, e, t: (p, d, e),
           "edp": lambda p, d, e, t: (p, e, t)}[name]
    found: dict[tuple, list[int]] = {}
    for p, d, e, t in itertools.product(range(layout.pp), range(expert_dp(layout)),
                                        range(layout.ep), range(layout.etp)):
        rank = p * stage + (d * layout.ep + e) * layout.etp + t
        found.setdefault(key(p, d, e, t), []).append(rank)
    return [sorted(ranks) for ranks in found.values()]


def mapping_problem(layout) -> str | None:
    """Why the MoE mapping cannot cover the attention mapping's ranks (None if it can)."""
    if per_stage(layout) % (layout.ep * layout.etp):
        return (f"MoE mapping etp={layout.etp} x ep={layout.ep} x edp must equal the attention "
                f"mapping tp={layout.tp} x cp={layout.cp} x dp={layout.dp} = "
                f"{per_stage(layout)} ranks per pipeline stage: etp * ep must divide it")
    return None
