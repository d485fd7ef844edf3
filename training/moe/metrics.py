"""What MoE layers add to a step's metrics record: the load-balancing and z losses (summed
over MoE layers, averaged over micro-batches and DP), dropped token-slots, and at evaluation
the tokens each expert of each MoE layer was routed (summed over the whole validation set).
`moe_a2a_s` is rank 0's seconds in the token all-to-alls (EP and ETP) during the step."""

from __future__ import annotations

import torch
import torch.distributed as dist

from training.moe.dispatch import A2A_CLOCK
from training.moe.layer import MoELayer
from training.parallel import comm
from training.parallel.comm import SOLO

FIELDS = ("calls", "aux", "z", "slots", "dropped")


def take_moe_metrics(model: torch.nn.Module, cfg, device, kind: str) -> dict:
    """Sum this rank's MoE statistics of `kind` (train or eval) over the world and reset
    them; collective: every rank calls it at the same point."""
    moe = cfg.moe
    if moe is None:
        return {}
    table = torch.zeros((cfg.layers, len(FIELDS) + moe.experts), dtype=torch.float64,
                        device=device)
    for layer in (m for m in model.modules() if isinstance(m, MoELayer)):
        stats = layer.stats[kind]
        if stats:
            table[layer.index, : len(FIELDS)] = torch.tensor([float(stats[f]) for f in FIELDS],
                                                             dtype=torch.float64)
            table[layer.index, len(FIELDS):] = stats["counts"]
        layer.stats[kind] = {}
    world = dist.group.WORLD if dist.is_initialized() and dist.get_world_size() > 1 else SOLO
    comm.all_reduce(table, world)
    rows = table[[i for i in range(cfg.layers) if moe.is_moe_layer(i)]].cpu()
    if kind == "eval":
        return {"moe_expert_tokens": rows[:, len(FIELDS):].long().tolist()}
    calls = rows[:, 0].clamp_min(1)
    return {"moe_a2a_s": A2A_CLOCK.reset(),"moe_aux_loss": float((rows[:, 1] / calls).sum()),
            "moe_z_loss": float((rows[:, 2] / calls).sum()),
            "moe_dropped": int(rows[:, 4].sum()),
            "moe_dropped_frac": float(rows[:, 4].sum() / rows[:, 3].sum().clamp_min(1))}


def set_backward_scale(model: torch.nn.Module, scale: float) -> None:
    """The factor the loss is scaled by before its backward (1 / micro-batches per step):
    the auxiliary losses' gradients take the same."""
    for layer in model.modules():
        if isinstance(layer, MoELayer):
            layer.backward_scale = scale
