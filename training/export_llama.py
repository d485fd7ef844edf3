"""A llama-arch checkpoint as a Hugging Face `LlamaForCausalLM` folder (see export_hf.py).

Storage differences undone here: our attention projection is `q` ([head][head_dim]) plus `kv`
([kv_head][k|v][head_dim]), or one head-major `qkv` ([head][q|k|v][head_dim]) when kv_heads
equals heads, where Llama has q_proj, k_proj, v_proj; our SwiGLU `fc` rows alternate gate and
up (gate_0, up_0, gate_1, ...), where Llama has gate_proj and up_proj. Rotary positions use
the rotate-half convention Hugging Face's Llama uses, so q and k need no permutation.
"""

from __future__ import annotations

import torch

from training.blocks import NORM_EPS
from training.checkpoint_format import ShardReader
from training.config import ModelConfig

# What LlamaForCausalLM computes; any other value of these keys cannot be exported as Llama.
LLAMA_KEYS = {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu"}


def llama_problems(cfg: ModelConfig) -> list[str]:
    return [f"model.{key} is {getattr(cfg, key)}, Llama needs {value}"
            for key, value in LLAMA_KEYS.items() if getattr(cfg, key) != value]


def llama_tensors(reader: ShardReader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Llama parameter names -> tensors, from our global checkpoint tensors."""
    def ours(name: str) -> torch.Tensor:
        return reader.read_full(f"model/{name}")

    h, heads, kv = cfg.hidden, cfg.heads, cfg.kv
    head_dim = h // heads
    suffixes = ("weight", "bias") if cfg.bias else ("weight",)
    tensors = {"model.embed_tokens.weight": ours("embedding.word.weight"),
               "model.norm.weight": ours("head.ln.weight")}
    if not cfg.tie_embeddings:
        tensors["lm_head.weight"] = ours("output.weight")
    for i in range(cfg.layers):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        tensors[dst + "input_layernorm.weight"] = ours(src + "ln1.weight")
        tensors[dst + "post_attention_layernorm.weight"] = ours(src + "ln2.weight")
        for suffix in suffixes:
            rows = (lambda t: t.reshape(-1, h)) if suffix == "weight" else (lambda t: t.flatten())
            tail = (h,) if suffix == "weight" else ()
            if kv == heads:
                q, k, v = ours(src + f"attn.qkv.{suffix}").view(heads, 3, head_dim, *tail) \
                    .unbind(1)
            else:
                q = ours(src + f"attn.q.{suffix}")
                k, v = ours(src + f"attn.kv.{suffix}").view(kv, 2, head_dim, *tail).unbind(1)
            tensors.update({
                dst + f"self_attn.q_proj.{suffix}": rows(q),
                dst + f"self_attn.k_proj.{suffix}": rows(k),
                dst + f"self_attn.v_proj.{suffix}": rows(v),
            })
            if cfg.moe is None:  # MoE FFNs: export_mixtral.py
                gate, up = swiglu_halves(ours(src + f"mlp.fc.{suffix}"))
                tensors.update({dst + f"mlp.gate_proj.{suffix}": gate,
                                dst + f"mlp.up_proj.{suffix}": up})
        tensors[dst + "self_attn.o_proj.weight"] = ours(src + "attn.proj.weight")
        if cfg.moe is None:
            tensors[dst + "mlp.down_proj.weight"] = ours(src + "mlp.proj.weight")
        if cfg.bias:
            tensors[dst + "self_attn.o_proj.bias"] = ours(src + "attn.proj.bias")
            tensors[dst + "mlp.down_proj.bias"] = ours(src + "mlp.proj.bias")
    return {name: tensor.contiguous() for name, tensor in tensors.items()}


def swiglu_halves(fc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate, up) of one SwiGLU `fc` weight or bias, whose rows alternate gate and up."""
    return fc.view(fc.shape[0] // 2, 2, *fc.shape[1:]).unbind(1)


def llama_config(cfg: ModelConfig, vocab_size: int, eod_id: int | None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": vocab_size,  # padded: the embedding's rows, not the tokenizer's size
        "hidden_size": cfg.hidden, "intermediate_size": cfg.ffn,
        "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv, "head_dim": cfg.hidden // cfg.heads,
        "max_position_embeddings": cfg.seq_len, "rope_theta": cfg.rope_theta,
        "rms_norm_eps": NORM_EPS, "hidden_act": "silu", "initializer_range": cfg.init_std,
        "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout,
        "tie_word_embeddings": cfg.tie_embeddings, "use_cache": True,
        "bos_token_id": eod_id, "eos_token_id": eod_id, "torch_dtype": "float32",
    }
