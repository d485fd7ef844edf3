"""The architecture keys of `model:` and the presets that set them as a group.

`model.arch: gpt2` is GPT-2 (LayerNorm, learned positions, GELU MLP, tied output layer,
biases); `model.arch: llama` is Llama (RMSNorm, rotary positions, SwiGLU FFN, untied output
layer, no biases). A preset only fills the keys the config leaves out, so
`{arch: llama, tie_embeddings: true}` is Llama with a tied output layer.
"""

from __future__ import annotations

import math

PRESETS: dict[str, dict] = {
    "gpt2": {"norm": "layernorm", "position": "learned", "mlp": "gelu",
             "tie_embeddings": True, "bias": True},
    "llama": {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu",
              "tie_embeddings": False, "bias": False},
}

# Llama's published FFN width: 2/3 of 4 * hidden, rounded up to a multiple of 256 (Llama 1/2's
# `multiple_of`). Llama 3 also scales by 1.3 and rounds to 1024: its configs give ffn_hidden.
SWIGLU_MULTIPLE = 256


def apply_preset(raw: dict) -> dict:
    """`raw` (the `model:` mapping) with the keys its preset sets and it does not."""
    if not isinstance(raw, dict):
        return raw
    arch = raw.get("arch", "gpt2")
    return {**PRESETS.get(arch, {}), **raw}


def default_ffn(hidden: int, mlp: str) -> int:
    if mlp == "swiglu":
        return math.ceil(2 * 4 * hidden / 3 / SWIGLU_MULTIPLE) * SWIGLU_MULTIPLE
    return 4 * hidden


def model_problems(heads: int, kv_heads: int, head_dim: int, position: str) -> list[str]:
    """What the attention shape cannot be, whatever the layout."""
    problems = []
    if heads % kv_heads:
        problems.append(f"model.kv_heads ({kv_heads}) must divide model.heads ({heads})")
    if position == "rope" and head_dim % 2:
        problems.append(f"model.position rope rotates pairs: the head size (hidden / heads = "
                        f"{head_dim}) must be even")
    return problems


def tensor_parallel_problems(heads: int, kv_heads: int, tp: int) -> list[str]:
    """KV heads are split over TP when tp divides them and replicated when they divide tp
    (each rank then holds all of them and uses its own query heads' group)."""
    if kv_heads % tp and tp % kv_heads:
        return [f"model.kv_heads ({kv_heads}) and parallel.tp ({tp}): one must divide the "
                "other (KV heads are split over TP, or replicated when fewer than tp)"]
    return []
