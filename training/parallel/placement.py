"""Where a parameter lives in the process grid: one `Placement` record per parameter, which the
gradient reduction, the clipping norm, the checkpoint and the full-state gather all read, so a
new kind of parameter (an expert, a LoRA adapter, a pipeline's copy of the tied embedding) is
one record, never a special case in those places.

A record says:
- `shards`: (grid dimension, tensor dimension) pairs: the tensor is split along that tensor
  dimension over that grid dimension, this rank holding the slice at its coordinate. Dense
  weights split over `tp` (column-parallel: dim 0, row-parallel: dim 1); an expert weight
  [experts, ...] over `ep` at dim 0 (a rank holds its block of experts by global index) and,
  with expert tensor parallelism, over `etp` at its row or column dim.
- `replicated_over`: the model-parallel grid dimensions over which the tensor is identical
  (a LayerNorm gain over `tp`; an expert not split by ETP over `etp`). The distinct elements
  of the model are those on coordinate 0 of each of them.
- `grad_sum`: a model-parallel group whose ranks each hold only part of the gradient, summed
  before the data-parallel reduction: `tp` for TP-replicated weights fed one sequence shard
  (sequence parallelism), for grouped-query KV heads and LoRA factors whose gradient each TP
  rank sees only a share of, and for a router fed a TP rank's share of the tokens;
  `embedding` for the first and last pipeline stages' copies of a tied word embedding.
- `reduce_over`: the group of its data-parallel replicas, which averages (and with ZeRO
  shards) its gradient: `dp_cp` for dense weights (CP ranks see other tokens of the same
  samples), `edp` for experts (replicated over expert-DP, Liu et al., 2025, sec. 3). The sum
  is divided by dp * cp either way, the number of data-parallel replicas of the loss: an
  expert's EDP replica has already summed the gradients of every token its EP x ETP group
  routed, which come from tp * cp * dp / edp token shards.
- `stored_as`: the checkpoint name of the parameter this one is a copy of (the last stage's
  tied embedding), or None: a copy is never counted in the norm nor written.

From these, each distinct element is counted once in the global gradient norm (over the whole
world): on coordinate 0 of every `replicated_over` dimension, and, unless the gradients are
ZeRO-sharded over `reduce_over`, on that group's rank 0 only. A checkpoint boxes a tensor in
its global shape (each sharded dimension `size` times longer, this rank's slice at
`coordinate` times its length): the format on disk is the same for dense weights and experts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from training.moe.mapping import expert_dp
from training.parallel import comm
from training.parallel.grad_buckets import PreReduction, ReduceGroup


@dataclass(frozen=True)
class Placement:
    shards: tuple[tuple[str, int], ...] = ()
    replicated_over: tuple[str, ...] = ()
    grad_sum: str | None = None
    reduce_over: str = "dp_cp"
    stored_as: str | None = None

    def dim(self, grid_dim: str) -> int | None:
        """The tensor dimension split over `grid_dim`, or None."""
        return dict(self.shards).get(grid_dim)


def tensor_parallel(tp_dim: int | None) -> Placement:
    """A dense weight split over TP at `tp_dim`, or replicated over TP (None)."""
    if tp_dim is None:
        return Placement(replicated_over=("tp",))
    return Placement(shards=(("tp", tp_dim),))


def expert(etp_dim: int | None) -> Placement:
    """An expert weight [experts, ...]: experts split over EP, `etp_dim` over ETP (or None:
    replicated over ETP), its gradient averaged over expert-DP."""
    if etp_dim is None:
        return Placement(shards=(("ep", 0),), replicated_over=("etp",), reduce_over="edp")
    return Placement(shards=(("ep", 0), ("etp", etp_dim)), reduce_over="edp")


def place(param: nn.Parameter, record: Placement) -> nn.Parameter:
    """Attach `record` to `param` (replacing any earlier one); returns `param`."""
    param.placement = record
    return param


def placement(param: nn.Parameter) -> Placement:
    """The record of `param`; every model parameter gets one where it is made."""
    record = getattr(param, "placement", None)
    if record is None:
        raise AttributeError(f"parameter of shape {tuple(param.shape)} has no placement "
                             "record (make it with training.parallel.placement.place)")
    return record


def amend(param: nn.Parameter, **changes) -> nn.Parameter:
    """Replace fields of `param`'s record (e.g. `grad_sum="tp"`); returns `param`."""
    return place(param, replace(placement(param), **changes))


def coordinate(grid, name: str) -> tuple[int, int]:
    """(this rank's index, size) in grid dimension or group `name`."""
    layout = grid.layout
    _, edp_rank, ep_rank, etp_rank = grid.moe_coords
    return {"tp": (grid.tp_rank, layout.tp), "cp": (grid.cp_rank, layout.cp),
            "dp": (grid.dp_rank, layout.dp), "dp_cp": (grid.dp_cp_rank, layout.dp * layout.cp),
            "ep": (ep_rank, layout.ep), "etp": (etp_rank, layout.etp),
            "edp": (edp_rank, expert_dp(layout))}[name]


def _first_replica(record: Placement, grid, order: int, sharded: bool) -> bool:
    """Whether this rank holds the copy of `record`'s elements that is counted / written:
    coordinate 0 of every dimension replicating it, and (state replicated over its
    `reduce_over` group) the replica `order` modulo that group's size."""
    if record.stored_as is not None:
        return False
    if any(coordinate(grid, name)[0] != 0 for name in record.replicated_over):
        return False
    rank, size = coordinate(grid, record.reduce_over)
    return sharded or order % size == rank


def counts_in_norm(param: nn.Parameter, grid, sharded: bool) -> bool:
    """Whether this rank counts `param` in a gradient norm summed over the world."""
    return _first_replica(placement(param), grid, 0, sharded)


def writes_in_checkpoint(param: nn.Parameter, grid, order: int, sharded: bool) -> bool:
    """Whether this rank writes its optimizer segments of `param` (the `order`-th trained
    parameter): every ZeRO shard's owner, or with replicated state the parameters spread
    round-robin over the `reduce_over` ranks."""
    return _first_replica(placement(param), grid, order, sharded)


def global_box(param: nn.Parameter, grid) -> tuple[list[int], list[int]]:
    """(global shape, offset of this rank's piece): each sharded dimension is `size` times
    longer and this rank's slice starts at its coordinate times the slice's length."""
    shape, offset = list(param.shape), [0] * param.ndim
    for name, dim in placement(param).shards:
        rank, size = coordinate(grid, name)
        shape[dim] *= size
        offset[dim] = rank * param.shape[dim]
    return shape, offset


def _gather(tensor: torch.Tensor, dim: int, group) -> torch.Tensor:
    parts = comm.group_size(group)
    if parts == 1:
        return tensor
    stacked = tensor.new_empty((parts, *tensor.shape))
    comm.all_gather_into(stacked.view(parts * tensor.shape[0], *tensor.shape[1:]),
                         tensor.contiguous(), group)
    return torch.cat(stacked.unbind(0), dim=dim)


def full_tensor(param: nn.Parameter, grid) -> torch.Tensor:
    """`param` gathered over every dimension that shards it (collective over those groups)."""
    tensor = param.detach()
    for name, dim in reversed(placement(param).shards):
        tensor = _gather(tensor, dim, grid.group(name))
    return tensor


def reduce_groups(params, grid) -> dict[nn.Parameter, ReduceGroup]:
    """Each parameter's data-parallel reduction, one `ReduceGroup` object per group (the
    buckets group parameters by it)."""
    divisor = grid.layout.dp * grid.layout.cp
    found = {}
    for param in params:
        name = placement(param).reduce_over
        if name not in found:
            rank, size = coordinate(grid, name)
            found[name] = ReduceGroup(grid.group(name), rank, size, divisor)
    return {param: found[placement(param).reduce_over] for param in params}


def pre_reductions(params, grid) -> dict[nn.Parameter, PreReduction]:
    """The model-parallel sums before the DP reduction: over TP inside the backward (TP ranks
    run the same one), over the pipeline's embedding group after it (its stages finish at
    different times, as Megatron defers it)."""
    kinds = {"tp": PreReduction(grid.group("tp"), in_backward=True),
             "embedding": PreReduction(grid.group("embedding"), in_backward=False)}
    return {param: kinds[placement(param).grad_sum] for param in params
            if placement(param).grad_sum is not None}
