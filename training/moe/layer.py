"""The MoE layer: router -> dispatch -> grouped experts -> combine (Liu et al., 2025, Fig. 2
and sec. 4), replacing a block's dense FFN.

On each rank (attention mapping TP x CP x DP x PP, MoE mapping ETP x EP x EDP x PP):
 1. tokens: this rank's [batch, seq_local, hidden] flattened; without sequence parallelism
    TP ranks hold the same tokens, so each keeps its 1/tp share (dispatch.split_tokens).
    Every rank of a stage now holds distinct tokens.
 2. route (router.py); the statistics of L_aux and L_z are summed over `tp_cp`, the ranks
    holding the rest of the micro-batch, so both losses are the single-process ones.
    With a capacity, the keep/drop choice is made on the whole micro-batch too (the slots
    of `tp_cp` gathered in canonical order), so the kept set equals one process's.
 3. permute: token-slots sorted by expert; counts exchanged over EP; rows sent to the EP
    rank owning their expert (all-to-all), then gathered over ETP (sec. 4's dispatcher with
    folding: EP inside TP x CP keeps the all-to-all within a node).
 4. the local experts as one grouped GEMM (experts.py); partial ETP outputs reduce-scattered
    back to their ETP source, then all-to-all back over EP.
 5. unpermute: each slot's output times its gate, summed per token (index_add); a dropped
    slot adds nothing and the token rides the residual. Gathered back over TP if split.
 6. shared experts (dense SwiGLU of width shared * ffn, TP-parallel) add to the output,
    with `shared_expert_gate` times sigmoid(x . w_g) per token (Qwen2-MoE). w_g is replicated
    over TP: each rank gates the tokens it holds (with sequence parallelism its shard, so its
    gradient is summed over TP like a norm's; model.py marks it).

L_aux + L_z reach the gradient at this layer (as Megatron's MoEAuxLossAutoScaler): the
output is an identity whose backward also seeds d(L_aux + L_z) with the loss's micro-batch
scale, so pipeline stages need not carry the losses to the last stage. They are not in the
reported LM loss; metrics.py logs them.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from training.blocks import MLP
from training.moe import dispatch
from training.moe.experts import GroupedExperts
from training.moe.router import (
    auxiliary_losses,
    capacity_keep,
    route,
    router_logits,
    router_statistics,
)
from training.parallel import comm
from training.parallel.context import load_balanced_positions
from training.parallel.placement import amend
from training.parallel.tensor import seeded_normal, tp_parameter

_RECOMPUTING = [False]


@contextmanager
def _recomputing():
    _RECOMPUTING[0] = True
    try:
        yield
    finally:
        _RECOMPUTING[0] = False


def recompute_context():
    """`context_fn` for a checkpointed block: its recomputation in the backward records no
    MoE statistics (they were recorded by the forward)."""
    return nullcontext(), _recomputing()


class _AttachAuxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, aux, scale):
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.full((), ctx.scale, dtype=grad.dtype, device=grad.device), None


class MoELayer(nn.Module):
    def __init__(self, cfg, grid, seed: int, name: str, index: int, sequence_parallel: bool):
        super().__init__()
        moe, layout = cfg.moe, grid.layout
        self.moe, self.index, self.seq_len = moe, index, cfg.seq_len
        _, _, ep_rank, etp_rank = grid.moe_coords
        self.router = tp_parameter(seeded_normal((moe.experts, cfg.hidden), cfg.init_std, seed,
                                                 name + ".router.weight"), tp_dim=None)
        self.sequence_parallel = sequence_parallel
        self.split = layout.tp > 1 and not sequence_parallel
        # each TP rank routes its own share of the tokens: the router's gradient is partial
        if self.split:
            amend(self.router, grad_sum="tp")
        self.experts = GroupedExperts(moe.experts, cfg.hidden, moe.ffn, layers=cfg.layers,
                                      std=cfg.init_std, seed=seed, name=name + ".experts",
                                      ep_rank=ep_rank, ep=layout.ep, etp_rank=etp_rank,
                                      etp=layout.etp)
        self.shared = None
        if moe.shared_experts:
            shared = cfg.model_copy(update={"ffn_hidden": moe.shared_experts * moe.ffn,
                                            "mlp": "swiglu"})
            self.shared = MLP(shared, grid, seed, name + ".shared", sequence_parallel)
        self.shared_gate = tp_parameter(
            seeded_normal((1, cfg.hidden), cfg.init_std, seed, name + ".shared_gate"),
            tp_dim=None) if moe.shared_expert_gate else None
        self.groups = {key: grid.group(key) for key in ("tp", "tp_cp", "ep", "etp")}
        self.tp_rank, self.cp, self.cp_rank = grid.tp_rank, layout.cp, grid.cp_rank
        self.tp, self.etp_rank = layout.tp, etp_rank
        self.backward_scale = 1.0  # set per step: the loss's 1 / micro-batches
        self.stats: dict[str, dict[str, torch.Tensor | int]] = {"train": {}, "eval": {}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moe = self.moe
        tokens = x.reshape(-1, x.shape[-1])
        if self.split:
            tokens = dispatch.split_tokens(tokens, self.tp_rank, self.groups["tp"])
        routing = route(router_logits(tokens, self.router), moe.top_k, moe.router)
        stats = dispatch.sum_statistics(router_statistics(routing, moe.experts),
                                        self.groups["tp_cp"], float(self.cp))
        aux, z = auxiliary_losses(stats, moe.experts, moe.top_k, moe.aux_loss, moe.z_loss)
        keep = None
        capacity = moe.capacity(int(stats[-1].item()))
        if capacity is not None:
            keep = self._keep(routing, x.shape[0], x.shape[1], capacity)
        out = self._experts(tokens, routing, keep)
        if self.training and torch.is_grad_enabled():
            out = _AttachAuxLoss.apply(out, aux + z, self.backward_scale)
        if not _RECOMPUTING[0]:
            self._record(aux, z, torch.bincount(routing.experts.flatten(),
                                                minlength=moe.experts), keep,
                         routing.experts.numel())
        if self.split:
            out = dispatch.gather_tokens(out, self.tp_rank, self.groups["tp"])
        out = out.view_as(x)
        if self.shared is not None:
            shared = self.shared(x)
            if self.shared_gate is not None:
                shared = shared * torch.sigmoid(F.linear(x, self.shared_gate))
            out = out + shared
        return out

    def _token_index(self, batch: int, seq_local: int, device) -> torch.Tensor:
        """Each local token's place in the micro-batch (sample * seq_len + position), in the
        order `tokens` holds them."""
        positions = (load_balanced_positions(self.seq_len, self.cp, self.cp_rank, device)
                     if self.cp > 1 else torch.arange(self.seq_len, device=device))
        index = torch.arange(batch, device=device)[:, None] * self.seq_len + positions
        if self.sequence_parallel and self.tp > 1:
            index = index.chunk(self.tp, dim=1)[self.tp_rank]
        assert index.shape[1] == seq_local
        index = index.flatten()
        return index.chunk(self.tp)[self.tp_rank] if self.split else index

    def _keep(self, routing, batch: int, seq_local: int, capacity: int) -> torch.Tensor:
        """[T, k] which slots their experts keep, decided over the whole micro-batch."""
        k = self.moe.top_k
        slots = (self._token_index(batch, seq_local, routing.gates.device)[:, None] * k
                 + torch.arange(k, device=routing.gates.device)).flatten()
        score = (routing.gates.detach().flatten().double() if self.moe.drop_policy == "probs"
                 else -slots.double())
        mine = torch.stack([slots.double(), routing.experts.flatten().double(), score])
        group = self.groups["tp_cp"]
        every = mine.new_empty((comm.group_size(group), *mine.shape))
        comm.all_gather_into(every.view(-1, mine.shape[1]), mine, group)
        every = every.transpose(0, 1).reshape(3, -1)
        order = every[0].argsort()
        every = every[:, order]
        keep = capacity_keep(every[1].long(), every[2], capacity, self.moe.experts)
        return keep[torch.searchsorted(every[0], slots.double())].view(-1, k)

    def _experts(self, tokens, routing, keep) -> torch.Tensor:
        """Steps 3-5 of the module docstring: permute, dispatch, compute, combine."""
        k, num_experts = self.moe.top_k, self.moe.experts
        expert = routing.experts.flatten()
        token = torch.arange(len(tokens), device=tokens.device).repeat_interleave(k)
        gate = routing.gates.flatten()
        if keep is not None:
            kept = keep.flatten()
            expert, token, gate = expert[kept], token[kept], gate[kept]
        order = torch.sort(expert, stable=True).indices
        expert, token, gate = expert[order], token[order], gate[order]
        counts = torch.bincount(expert, minlength=num_experts)
        ep_group, etp_group = self.groups["ep"], self.groups["etp"]
        ep = comm.group_size(ep_group)
        received = dispatch.exchange_counts(counts, ep_group, etp_group)  # [etp, ep, local]
        send = counts.view(ep, -1).sum(1).tolist()
        recv = received[self.etp_rank].sum(1).tolist()
        rows = dispatch.all_to_all_v(tokens[token], recv, send, ep_group)
        sizes = received.flatten(1).sum(1).tolist()
        rows = dispatch.all_gather_v(rows, sizes, self.etp_rank, etp_group)
        local = torch.arange(received.shape[2], device=rows.device).repeat(
            received.shape[0] * received.shape[1]).repeat_interleave(received.flatten())
        by_expert = torch.sort(local, stable=True).indices
        out = self.experts(rows[by_expert], received.sum((0, 1)))
        out = out[torch.argsort(by_expert)]
        out = dispatch.reduce_scatter_v(out, sizes, self.etp_rank, etp_group)
        out = dispatch.all_to_all_v(out, send, recv, ep_group)
        out = out * gate.unsqueeze(1).to(out.dtype)
        return torch.zeros_like(tokens).index_add(0, token, out)

    def _record(self, aux, z, counts, keep, slots: int) -> None:
        """Accumulate what metrics.py reports: per forward L_aux, L_z, routed counts,
        dropped slots (this rank's tokens)."""
        stats = self.stats["train" if self.training else "eval"]
        stats["calls"] = stats.get("calls", 0) + 1
        stats["aux"] = stats.get("aux", 0.0) + aux.item()
        stats["z"] = stats.get("z", 0.0) + z.item()
        stats["slots"] = stats.get("slots", 0) + slots
        stats["dropped"] = stats.get("dropped", 0) + (0 if keep is None else
                                                      int((~keep).sum()))
        stats["counts"] = stats.get("counts", 0) + counts.detach().double()
