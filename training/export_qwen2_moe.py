"""A llama-arch MoE checkpoint with shared experts as a Hugging Face `Qwen2MoeForCausalLM`
folder (see export_hf.py): attention, norms and embeddings as Llama's (export_llama.py), each
MoE block's router as `mlp.gate`, routed expert j's SwiGLU as `mlp.experts.j.{gate,up,down}_proj`,
the shared experts (one SwiGLU of width shared_experts * ffn) as `mlp.shared_expert` and its
sigmoid gate as `mlp.shared_expert_gate`. Our SwiGLU `fc` rows alternate gate and up.

Qwen2-MoE takes softmax over all experts, then the top k; `norm_topk_prob` renormalises the
k chosen probabilities, which is our `topk_softmax` (softmax over the k largest logits), and
leaving them unnormalised is our `softmax_topk`. Blocks that `every` leaves dense are its
`mlp_only_layers`. It always gates the shared expert and has no output or FFN biases; it
computes dropless, so a model trained with a capacity factor exports as its dropless function.
"""

from __future__ import annotations

import torch

from training.checkpoint_format import ShardReader
from training.config import ModelConfig
from training.export_llama import llama_config, llama_problems, llama_tensors, swiglu_halves


def qwen2_moe_problems(cfg: ModelConfig) -> list[str]:
    problems = llama_problems(cfg)
    if not cfg.moe.shared_expert_gate:
        problems.append("model.moe.shared_expert_gate is false, Qwen2-MoE gates its shared "
                        "expert (set it true)")
    if cfg.bias:
        problems.append("model.bias is true, Qwen2-MoE has biases only on q, k and v")
    return problems


def _swiglu(fc: torch.Tensor, proj: torch.Tensor, dst: str) -> dict[str, torch.Tensor]:
    gate, up = swiglu_halves(fc)
    return {dst + "gate_proj.weight": gate.contiguous(), dst + "up_proj.weight": up.contiguous(),
            dst + "down_proj.weight": proj.contiguous()}


def qwen2_moe_tensors(reader: ShardReader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    tensors = llama_tensors(reader, cfg)
    moe = cfg.moe
    for i in range(cfg.layers):
        src, dst = f"model/blocks.{i}.mlp.", f"model.layers.{i}.mlp."
        if not moe.is_moe_layer(i):
            tensors.update(_swiglu(reader.read_full(src + "fc.weight"),
                                   reader.read_full(src + "proj.weight"), dst))
            continue
        tensors[dst + "gate.weight"] = reader.read_full(src + "router")
        fc = reader.read_full(src + "experts.fc")
        proj = reader.read_full(src + "experts.proj")
        for j in range(moe.experts):
            tensors.update(_swiglu(fc[j], proj[j], dst + f"experts.{j}."))
        tensors.update(_swiglu(reader.read_full(src + "shared.fc.weight"),
                               reader.read_full(src + "shared.proj.weight"),
                               dst + "shared_expert."))
        tensors[dst + "shared_expert_gate.weight"] = reader.read_full(src + "shared_gate")
    return tensors


def qwen2_moe_config(cfg: ModelConfig, vocab_size: int, eod_id: int | None) -> dict:
    config = llama_config(cfg, vocab_size, eod_id)
    for key in ("mlp_bias", "attention_bias"):
        config.pop(key)
    moe = cfg.moe
    return {**config, "architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe",
            "qkv_bias": False, "use_sliding_window": False, "decoder_sparse_step": 1,
            "mlp_only_layers": [i for i in range(cfg.layers) if not moe.is_moe_layer(i)],
            "moe_intermediate_size": moe.ffn, "num_experts": moe.experts,
            "num_experts_per_tok": moe.top_k, "norm_topk_prob": moe.router == "topk_softmax",
            "shared_expert_intermediate_size": moe.shared_experts * moe.ffn,
            "router_aux_loss_coef": moe.aux_loss, "output_router_logits": False}
