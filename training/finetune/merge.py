"""`pretrain finetune merge CKPT OUT`: a fine-tuning checkpoint folded into a full one.

Every weight of the base (`finetune.init_from`) is read as a global tensor, replaced by the
fine-tuning checkpoint's own when it trained it (full fine-tuning), and every LoRA-adapted
linear gets W + (alpha / r) B A (computed in float64, stored in fp32). OUT is a one-file
checkpoint folder of the usual format (model weights only: what `train.init_from`,
`pretrain export-hf` and a new fine-tune read), its config the fine-tune's without the
`finetune:` section, so it loads as a plain model of the same architecture.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from training.checkpoint_format import (
    FORMAT,
    INDEX_NAME,
    ShardReader,
    file_sha256,
    merge_entries,
    rank_file_name,
    read_index,
    resolve_checkpoint,
    shard_entry,
    write_json_atomic,
)
from training.config import TrainingConfig
from training.finetune.setup import base_checkpoint

LORA_SUFFIXES = (".lora_A", ".lora_B")


def finetune_checkpoint(path: str | Path) -> tuple[Path, dict, TrainingConfig]:
    ckpt = resolve_checkpoint(Path(path))
    index = read_index(ckpt)
    cfg = TrainingConfig.model_validate(index["config"])
    if cfg.finetune is None:
        raise ValueError(f"{ckpt}: not a fine-tuning checkpoint (its config has no finetune:)")
    return ckpt, index, cfg


def adapted_linears(index: dict) -> list[str]:
    """Names of the linears a LoRA checkpoint adapts (`blocks.0.attn.qkv`, ...)."""
    return sorted(key[len("model/"): -len(".lora_A")] for key in index["tensors"]
                  if key.startswith("model/") and key.endswith(".lora_A"))


def merged_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, TrainingConfig]:
    """{parameter name: global fp32 tensor} of the merged model, the base index, the config."""
    ckpt, index, cfg = finetune_checkpoint(path)
    base = base_checkpoint(cfg.finetune.init_from)
    base_index = read_index(base)
    tuned, original = ShardReader(ckpt, index), ShardReader(base, base_index)
    weights = {}
    for key in base_index["tensors"]:
        if not key.startswith("model/"):
            continue
        reader = tuned if key in index["tensors"] else original
        weights[key[len("model/"):]] = reader.read_full(key).float()
    lora = cfg.finetune.lora
    for name in adapted_linears(index):
        a = tuned.read_full(f"model/{name}.lora_A").double()
        b = tuned.read_full(f"model/{name}.lora_B").double()
        weight = weights[f"{name}.weight"]
        weights[f"{name}.weight"] = (weight.double() + lora.alpha / lora.rank * b @ a).float()
    return weights, base_index, cfg


def merge(checkpoint: str | Path, out: str | Path) -> Path:
    weights, base_index, cfg = merged_weights(checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    file = rank_file_name(0)
    tensors = {f"model/{name}": t.contiguous() for name, t in weights.items()}
    save_file(tensors, str(out / file))
    entries = [(key, shard_entry(file, t.shape, [0] * t.ndim, t.shape))
               for key, t in tensors.items()]
    config = cfg.dump()
    config.pop("finetune")
    index = {key: base_index[key] for key in ("vocab_size", "data_vocab_size")}
    index.update({"format": FORMAT, "step": 0, "consumed_samples": 0, "optimizer_steps": 0,
                  "skipped_steps": 0, "layout": {"tp": 1, "pp": 1, "dp": 1,
                                                 "virtual_stages": 1},
                  "config": config, "files": {file: file_sha256(out / file)},
                  "tensors": merge_entries([entries])})
    write_json_atomic(out / INDEX_NAME, index)
    return out
