"""A llama-arch MoE checkpoint as a Hugging Face `MixtralForCausalLM` folder (see
export_hf.py): attention, norms and embeddings as Llama's (export_llama.py), each block's MoE
as Mixtral's `block_sparse_moe`: the router as `gate`, expert j's SwiGLU as w1 (gate), w3
(up) and w2 (down). Our expert `fc` rows alternate gate and up, as the dense SwiGLU's.

Mixtral routes top-k with softmax over the chosen logits (our `topk_softmax`), every block
is MoE and there are no biases (an MoE with shared experts exports as Qwen2-MoE instead); it
computes dropless, so a model trained with a capacity factor exports as its dropless function.
"""

from __future__ import annotations

import torch

from training.checkpoint_format import ShardReader
from training.config import ModelConfig
from training.export_llama import llama_config, llama_problems, llama_tensors, swiglu_halves

MIXTRAL_MOE = {"router": "topk_softmax", "every": 1}


def mixtral_problems(cfg: ModelConfig) -> list[str]:
    problems = llama_problems(cfg)
    problems += [f"model.moe.{key} is {getattr(cfg.moe, key)}, Mixtral needs {value}"
                 for key, value in MIXTRAL_MOE.items() if getattr(cfg.moe, key) != value]
    if cfg.bias:
        problems.append("model.bias is true, Mixtral has no biases")
    return problems


def mixtral_tensors(reader: ShardReader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    tensors = llama_tensors(reader, cfg)
    moe = cfg.moe
    for i in range(cfg.layers):
        src, dst = f"model/blocks.{i}.mlp.", f"model.layers.{i}.block_sparse_moe."
        tensors[dst + "gate.weight"] = reader.read_full(src + "router")
        fc = reader.read_full(src + "experts.fc")
        proj = reader.read_full(src + "experts.proj")
        for j in range(moe.experts):
            gate, up = swiglu_halves(fc[j])
            tensors[dst + f"experts.{j}.w1.weight"] = gate.contiguous()
            tensors[dst + f"experts.{j}.w3.weight"] = up.contiguous()
            tensors[dst + f"experts.{j}.w2.weight"] = proj[j].contiguous()
    return tensors


def mixtral_config(cfg: ModelConfig, vocab_size: int, eod_id: int | None) -> dict:
    config = llama_config(cfg, vocab_size, eod_id)
    for key in ("mlp_bias", "attention_bias"):
        config.pop(key)
    return {**config, "architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
            "intermediate_size": cfg.moe.ffn, "num_local_experts": cfg.moe.experts,
            "num_experts_per_tok": cfg.moe.top_k, "router_aux_loss_coef": cfg.moe.aux_loss,
            "output_router_logits": False, "router_jitter_noise": 0.0, "sliding_window": None}
