"""`pretrain export-peft ADAPTER OUT`: a LoRA checkpoint's adapters as a Hugging Face PEFT
folder (adapter_config.json, adapter_model.safetensors) that `peft.PeftModel.from_pretrained`
loads onto the `pretrain export-hf` folder of the base checkpoint.

The adapters follow the base weights' storage changes in export_hf.py / export_llama.py: only
B's *rows* (the output side) move, A is unchanged. GPT-2: `qkv`'s B rows go from our
head-major [head][q|k|v][head_dim] to c_attn's [q|k|v][head][head_dim]; GPT-2's Conv1D stores
[in, out], which PEFT handles itself (`fan_in_fan_out: true`). Llama: a fused `qkv` (or `kv`)
is three (two) HF linears, so its B rows are split among q_proj, k_proj, v_proj and each gets
a copy of A (the same update: s B_q A, s B_k A, s B_v A); SwiGLU's `fc` B rows alternate gate
and up, so they are split into gate_proj and up_proj the same way. The scale alpha / r is
PEFT's lora_alpha / r.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from training.checkpoint_format import ShardReader
from training.config import ModelConfig
from training.finetune.merge import adapted_linears, finetune_checkpoint

PREFIX = "base_model.model."


def gpt2_adapters(name: str, a: torch.Tensor, b: torch.Tensor, cfg: ModelConfig):
    """[(HF module name, A, B)] for one of our adapted linears."""
    index, local = re.fullmatch(r"blocks\.(\d+)\.(.+)", name).groups()
    module = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc",
              "mlp.proj": "mlp.c_proj"}[local]
    if local == "attn.qkv":
        heads, head_dim = cfg.heads, cfg.hidden // cfg.heads
        b = b.view(heads, 3, head_dim, -1).transpose(0, 1).reshape(3 * cfg.hidden, -1)
    return [(f"transformer.h.{index}.{module}", a, b)]


def llama_adapters(name: str, a: torch.Tensor, b: torch.Tensor, cfg: ModelConfig):
    index, local = re.fullmatch(r"blocks\.(\d+)\.(.+)", name).groups()
    root, rank = f"model.layers.{index}.", b.shape[1]
    head_dim = cfg.hidden // cfg.heads
    if local == "attn.qkv":
        q, k, v = b.view(cfg.heads, 3, head_dim, rank).unbind(1)
        parts = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v}
    elif local == "attn.kv":
        k, v = b.view(cfg.kv, 2, head_dim, rank).unbind(1)
        parts = {"self_attn.k_proj": k, "self_attn.v_proj": v}
    elif local == "mlp.fc":
        gate, up = b.view(cfg.ffn, 2, rank).unbind(1)
        parts = {"mlp.gate_proj": gate, "mlp.up_proj": up}
    else:
        parts = {{"attn.q": "self_attn.q_proj", "attn.proj": "self_attn.o_proj",
                  "mlp.proj": "mlp.down_proj"}[local]: b}
    return [(root + module, a, part.reshape(-1, rank)) for module, part in parts.items()]


def export_peft(adapter: str | Path, out: str | Path) -> list[Path]:
    ckpt, index, cfg = finetune_checkpoint(adapter)
    lora = cfg.finetune.lora
    if lora is None:
        raise ValueError(f"{ckpt}: a full fine-tune (finetune.lora: null) has no adapters; "
                         "use `pretrain finetune merge` and `pretrain export-hf`")
    reader = ShardReader(ckpt, index)
    llama = cfg.model.arch == "llama"
    split = llama_adapters if llama else gpt2_adapters
    tensors, modules = {}, []
    for name in adapted_linears(index):
        a = reader.read_full(f"model/{name}.lora_A").float()
        b = reader.read_full(f"model/{name}.lora_B").float()
        for module, part_a, part_b in split(name, a, b, cfg.model):
            tensors[f"{PREFIX}{module}.lora_A.weight"] = part_a.clone()  # A is shared
            tensors[f"{PREFIX}{module}.lora_B.weight"] = part_b.clone()
            modules.append(module)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank,
        "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "bias": "none",
        # exactly the adapted modules (a name list would also catch, e.g., both c_proj)
        "target_modules": "(" + "|".join(re.escape(m) for m in modules) + ")",
        "fan_in_fan_out": not llama, "base_model_name_or_path": None, "inference_mode": True,
        "init_lora_weights": True, "modules_to_save": None, "use_rslora": False,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=1))
    return sorted(out.iterdir())
