"""The router: which experts each token goes to, with what weight, and the two auxiliary
losses that keep routing healthy.

Gating (Shazeer et al., 2017; Fedus et al., 2022 eq. 1-2; Jiang et al., 2024 for Mixtral),
for router logits l_t = W_r x_t over E experts:
    softmax_topk   p_t = softmax(l_t); the k largest p_te are the gates (unnormalised)
    topk_softmax   the k largest l_te, softmax over those k only are the gates (Mixtral)

Load-balancing loss (Switch Transformer, Fedus et al., 2022 eq. 4-6; GShard's l_aux), over
the T tokens of a micro-batch with top-k routing:
    L_aux = alpha * E * sum_e f_e * P_e,
    f_e = (token-slots routed to e) / (T * k),   P_e = (1/T) sum_t softmax(l_t)_e
f_e is a count (no gradient); P_e carries the gradient. Uniform routing gives L_aux = alpha.

Router z-loss (ST-MoE, Zoph et al., 2022 eq. 5): L_z = beta * (1/T) sum_t logsumexp(l_t)^2.

Capacity (GShard / Switch "expert capacity"): each expert keeps at most
C = ceil(capacity_factor * T * k / E) of a micro-batch's token-slots, choosing by router
probability (`probs`) or by position in the micro-batch (`position`); a dropped slot adds
nothing to the token's output, so the token rides the residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Routing:
    experts: torch.Tensor  # [T, k] expert of each token-slot
    gates: torch.Tensor  # [T, k] its weight (differentiable)
    probs: torch.Tensor  # [T, E] softmax over all experts (for L_aux)
    logsumexp: torch.Tensor  # [T] (for L_z)


def route(logits: torch.Tensor, top_k: int, router: str) -> Routing:
    """Gates and experts of each token from fp32 logits [T, E]."""
    probs = logits.softmax(dim=-1)
    if router == "softmax_topk":
        gates, experts = probs.topk(top_k, dim=-1)
    elif router == "topk_softmax":
        top, experts = logits.topk(top_k, dim=-1)
        gates = top.softmax(dim=-1)
    else:
        raise ValueError(f"unknown router {router!r}")
    return Routing(experts, gates, probs, logits.logsumexp(dim=-1))


def router_statistics(routing: Routing, experts: int) -> torch.Tensor:
    """[counts_e (E), sum_t p_te (E), sum_t lse_t^2, T] of these tokens, as one vector so
    ranks holding other tokens of the micro-batch can sum it in one message. Only the
    probability and z sums carry gradients."""
    counts = torch.bincount(routing.experts.flatten(), minlength=experts).to(routing.probs)
    tokens = torch.full((1,), routing.probs.shape[0], dtype=routing.probs.dtype,
                        device=routing.probs.device)
    return torch.cat([counts, routing.probs.sum(0), (routing.logsumexp ** 2).sum().view(1),
                      tokens])


def auxiliary_losses(stats: torch.Tensor, experts: int, top_k: int, alpha: float,
                     beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_aux, L_z) from the micro-batch's summed statistics (router_statistics)."""
    counts, prob_sums = stats[:experts].detach(), stats[experts: 2 * experts]
    z_sum, tokens = stats[2 * experts], stats[2 * experts + 1].detach()
    fraction = counts / (tokens * top_k)
    mean_prob = prob_sums / tokens
    return alpha * experts * (fraction * mean_prob).sum(), beta * z_sum / tokens


def capacity_keep(experts: torch.Tensor, scores: torch.Tensor, capacity: int,
                  num_experts: int) -> torch.Tensor:
    """Which token-slots each expert keeps: its `capacity` highest `scores` (ties go to the
    earlier slot). `experts`, `scores`: [N] in the micro-batch's canonical slot order."""
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(experts[order], stable=True).indices]  # by expert, then score
    sorted_experts = experts[order]
    starts = torch.searchsorted(sorted_experts, torch.arange(num_experts,
                                                             device=experts.device))
    rank_in_expert = torch.arange(len(order), device=experts.device) - starts[sorted_experts]
    keep = torch.empty_like(experts, dtype=torch.bool)
    keep[order] = rank_in_expert < capacity
    return keep


def router_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 logits (routing decisions are made in fp32 even in bf16 runs, as Megatron)."""
    return F.linear(x.float(), weight.float())
