"""Where an expert's gradient goes and who counts it (Liu et al., 2025, sec. 3: expert
parameters are replicated over EDP, dense ones over DP x CP).

Expert gradients are summed over `edp` and divided by dp * cp, the number of data-parallel
replicas of the loss: each EDP replica has already summed the gradients of every token its
EP x ETP group routed, and those come from tp * cp * dp / edp token shards.

The global gradient norm counts each distinct element once over the whole world: a dense
weight on TP rank 0 unless TP splits it, an expert weight on ETP rank 0 unless ETP splits it,
and, when gradients are not ZeRO-sharded (every replica holds them all), only on the first
DP x CP (dense) or EDP (expert) replica.
"""

from __future__ import annotations

import torch
from torch import nn

from training.moe.mapping import expert_dp
from training.parallel import comm
from training.parallel.grad_buckets import ReduceGroup


def is_expert(param: nn.Parameter) -> bool:
    return getattr(param, "expert", False)


def expert_reduce_groups(params, grid) -> dict[nn.Parameter, ReduceGroup]:
    layout = grid.layout
    _, edp_rank, _, _ = grid.moe_coords
    reduce = ReduceGroup(grid.group("edp"), edp_rank, expert_dp(layout), layout.dp * layout.cp)
    return {param: reduce for param in params if is_expert(param)}


def counts_in_world_norm(param: nn.Parameter, grid, sharded: bool) -> bool:
    """Whether this rank counts `param` in a norm summed over the world."""
    if getattr(param, "duplicate_of", None):
        return False
    _, edp_rank, _, etp_rank = grid.moe_coords
    if is_expert(param):
        return (param.etp_dim is not None or etp_rank == 0) and (sharded or edp_rank == 0)
    return (param.tp_dim is not None or grid.tp_rank == 0) and (sharded or grid.dp_cp_rank == 0)


def _gather(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = comm.group_size(group)
    if parts == 1:
        return tensor
    stacked = tensor.new_empty((parts, *tensor.shape))
    comm.all_gather_into(stacked.view(parts * tensor.shape[0], *tensor.shape[1:]),
                         tensor.contiguous(), group)
    return torch.cat(stacked.unbind(0), dim=dim)


def full_expert_tensor(param: nn.Parameter, grid) -> torch.Tensor:
    """An expert weight [experts, ...] gathered over ETP and EP (collective over both)."""
    tensor = param.detach()
    if param.etp_dim is not None:
        tensor = _gather(tensor, param.etp_dim, grid.group("etp"))
    return _gather(tensor, 0, grid.group("ep"))


def expert_box(param: nn.Parameter, grid) -> tuple[list[int], list[int]]:
    """(global shape, offset of this rank's piece) of an expert weight: experts by global
    index along dim 0 (this rank's are ep_rank's block), the ETP-split dim `etp` times longer."""
    _, _, ep_rank, etp_rank = grid.moe_coords
    shape, offset = list(param.shape), [0] * param.ndim
    shape[0] *= grid.layout.ep
    offset[0] = ep_rank * param.shape[0]
    if param.etp_dim is not None:
        shape[param.etp_dim] *= grid.layout.etp
        offset[param.etp_dim] = etp_rank * param.shape[param.etp_dim]
    return shape, offset


def writes_expert(param: nn.Parameter, grid, order: int, sharded: bool) -> bool:
    """Whether this rank writes its optimizer segments of an expert weight to a checkpoint:
    ETP rank 0 unless ETP splits it; every EDP rank its own ZeRO shard, or (state replicated
    over EDP) the weights spread round-robin over EDP ranks."""
    _, edp_rank, _, etp_rank = grid.moe_coords
    if param.etp_dim is None and etp_rank != 0:
        return False
    return sharded or order % expert_dp(grid.layout) == edp_rank
