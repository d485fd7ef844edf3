"""Parameters, memory and FLOPs of an MoE config from formulas (README, bench/moe.py).

Parameters of a llama-arch MoE with hidden h, L blocks, head size d, KV heads g, vocabulary V,
E experts of width f, top-k routing and s shared experts (SwiGLU: 3 h f weights each):
    attention  h (h + 2 g d) + h h            per block, plus 2 h of norms
    MoE FFN    E h (router) + E 3 h f + s 3 h f (+ h: the shared experts' gate)
    active     E h + (k + s) 3 h f (+ h)      what one token multiplies by
    total      L (attention + FFN) + V h (x2 untied) + h
Memory per rank with mixed precision and the distributed optimizer (ZeRO-1): 2 bytes of bf16
weights and 2 of gradients per parameter it holds, plus 12 (fp32 master, Adam m and v)
sharded over the replicas: DP x CP for dense weights, EDP for experts. A rank holds
dense / (tp pp) and expert / (ep etp pp) parameters (the embedding counted as spread evenly).
"""

from __future__ import annotations

from dataclasses import dataclass

from training.config import TrainingConfig, padded_vocab_size
from training.metrics import flops_per_step
from training.moe.mapping import expert_dp


@dataclass(frozen=True)
class MoESize:
    total: int  # parameters
    active: int  # parameters one token uses
    expert: int  # routed experts' parameters
    bytes_per_rank: float  # weights, gradients and optimizer state on one rank
    flops_per_token: float  # training (forward + backward), model FLOPs


def moe_size(cfg: TrainingConfig) -> MoESize:
    m, p, moe = cfg.model, cfg.parallel, cfg.model.moe
    h, vocab = m.hidden, padded_vocab_size(m.vocab_size, m.pad_vocab_to)
    attention = h * (h + 2 * m.kv * (h // m.heads)) + h * h + 2 * h
    dense_ffn = 3 * h * m.ffn
    expert, active_ffn, dense = 0, 0, vocab * h * (1 if m.tie_embeddings else 2) + h
    for index in range(m.layers):
        dense += attention
        if moe is not None and moe.is_moe_layer(index):
            expert += moe.experts * 3 * h * moe.ffn
            dense += (moe.experts * h + moe.shared_experts * 3 * h * moe.ffn
                      + (h if moe.shared_expert_gate else 0))
            active_ffn += moe.top_k * 3 * h * moe.ffn
        else:
            dense += dense_ffn
    dense_rank = dense / (p.tp * p.pp)
    expert_rank = expert / (p.ep * p.etp * p.pp)
    sharded = 12 if p.zero >= 1 else 1
    per_rank = (dense_rank * (4 + 12 / (p.dp * p.cp if sharded == 12 else 1))
                + expert_rank * (4 + 12 / (expert_dp(p) if sharded == 12 else 1)))
    return MoESize(dense + expert, dense + active_ffn, expert, per_rank,
                   flops_per_step(m, vocab, 1) / m.seq_len)
