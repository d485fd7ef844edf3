"""The `model.moe` keys and what a layout must satisfy to run them.

`every: n` makes block i an MoE block when i % n == 0 (Megatron's `--moe-layer-freq`).
`ffn` is one expert's hidden width; `shared_experts: s` adds a dense SwiGLU FFN of width
s * ffn that every token passes through (Qwen2-MoE / DeepSeek's shared experts);
`shared_expert_gate: true` scales its output per token by sigmoid(w . x), w a learned
[hidden] vector (Qwen2-MoE's `shared_expert_gate`).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from curation.config import StrictModel


class MoEConfig(StrictModel):
    experts: int = Field(gt=0)
    top_k: int = Field(2, gt=0)
    ffn: int = Field(gt=0, description="one expert's SwiGLU hidden width")
    every: int = Field(1, gt=0, description="block i is MoE when i % every == 0")
    router: Literal["softmax_topk", "topk_softmax"] = Field(
        "softmax_topk", description="softmax over all experts then top-k (Switch/GShard), or "
        "top-k logits then softmax over them (Mixtral)")
    aux_loss: float = Field(0.01, ge=0.0, description="load-balancing loss coefficient")
    z_loss: float = Field(0.001, ge=0.0, description="router z-loss coefficient")
    capacity_factor: float | None = Field(
        None, gt=0.0, description="null: dropless; else each expert keeps at most "
        "ceil(factor * tokens * top_k / experts) tokens of a micro-batch")
    drop_policy: Literal["probs", "position"] = Field(
        "probs", description="over capacity: keep an expert's highest-probability tokens, or "
        "its earliest")
    shared_experts: int = Field(0, ge=0)
    shared_expert_gate: bool = Field(
        False, description="scale the shared experts' output by sigmoid(w . x) (Qwen2-MoE)")

    @model_validator(mode="after")
    def _top_k_fits(self) -> MoEConfig:
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) must not exceed experts ({self.experts})")
        if self.shared_expert_gate and not self.shared_experts:
            raise ValueError("shared_expert_gate: true gates the shared experts: set "
                             "shared_experts >= 1")
        return self

    def is_moe_layer(self, index: int) -> bool:
        return index % self.every == 0

    def capacity(self, tokens: int) -> int | None:
        """Tokens an expert keeps from a micro-batch of `tokens` (None: dropless)."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * tokens * self.top_k / self.experts)


def moe_problems(moe: MoEConfig | None, mlp: str, parallel, micro: int, seq_len: int
                 ) -> list[str]:
    """What the MoE mapping (ETP x EP x EDP x PP over the attention's TP x CP x DP x PP
    ranks) cannot run; every problem names its keys."""
    p = parallel
    problems = []
    if moe is None:
        if p.ep > 1 or p.etp > 1:
            problems.append(f"parallel.ep ({p.ep}) and parallel.etp ({p.etp}) need model.moe")
        return problems
    if mlp != "swiglu":
        problems.append(f"model.moe experts are SwiGLU: set model.mlp: swiglu (got {mlp})")
    per_stage = p.tp * p.cp * p.dp
    if per_stage % (p.ep * p.etp):
        problems.append(
            f"the MoE mapping etp x ep x edp must cover the attention mapping's tp x cp x dp "
            f"= {p.tp} x {p.cp} x {p.dp} = {per_stage} ranks per pipeline stage: "
            f"parallel.etp * parallel.ep ({p.etp} * {p.ep}) must divide {per_stage}")
    if moe.experts % p.ep:
        problems.append(f"model.moe.experts ({moe.experts}) must be divisible by "
                        f"parallel.ep ({p.ep})")
    if moe.ffn % p.etp:
        problems.append(f"model.moe.ffn ({moe.ffn}) must be divisible by parallel.etp ({p.etp})")
    if moe.shared_experts and (moe.shared_experts * moe.ffn) % p.tp:
        problems.append(f"model.moe.shared_experts * ffn ({moe.shared_experts * moe.ffn}) must "
                        f"be divisible by parallel.tp ({p.tp})")
    tokens = micro * seq_len // p.cp
    if p.tp > 1 and tokens % p.tp:
        problems.append(f"an MoE layer splits each rank's batch.micro * model.seq_len / "
                        f"parallel.cp = {tokens} tokens over parallel.tp ({p.tp}): it must "
                        "be divisible")
    return problems
