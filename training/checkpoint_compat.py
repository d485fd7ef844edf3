"""What may differ between a checkpoint's config and the run that resumes from it.

The architecture may not: a model with other heads, or another tokenizer of the same padded
size, has tensors of the same shapes and would load without a complaint into nonsense. The
parallel layout may (checkpoints are resharded on load), and so may everything else: a longer
run, a new learning rate, new data. Those change what the run computes, so they are named
when it resumes rather than taken silently."""

from __future__ import annotations

from pathlib import Path

from training.architecture import default_ffn
from training.checkpoint_format import CheckpointError

# Run bookkeeping: changing these on resume is routine and not worth a line.
ROUTINE = frozenset({"train.steps", "train.dir", "train.save_every", "train.keep_last",
                     "train.log_every", "train.eval_every", "train.eval_iters",
                     "train.max_skipped_steps"})


def architecture(config: dict, vocab_size: int) -> dict:
    """The settings that decide what function the saved tensors compute."""
    model = config["model"]
    return {"model.layers": model["layers"], "model.hidden": model["hidden"],
            "model.heads": model["heads"], "model.seq_len": model["seq_len"],
            "model.ffn_hidden": model.get("ffn_hidden")
            or default_ffn(model["hidden"], model.get("mlp", "gelu")),
            "model.kv_heads": model.get("kv_heads") or model["heads"],
            **{f"model.{key}": model.get(key, default) for key, default in (
                ("norm", "layernorm"), ("position", "learned"), ("mlp", "gelu"),
                ("tie_embeddings", True), ("bias", True), ("rope_theta", 10000.0))},
            **{f"model.moe.{key}": (model.get("moe") or {}).get(key) for key in (
                "experts", "top_k", "ffn", "every", "router", "shared_experts")},
            # checkpoints saved before the key existed had no gate
            "model.moe.shared_expert_gate": model["moe"].get("shared_expert_gate", False)
            if model.get("moe") else None,
            "vocabulary size (unpadded)": vocab_size}


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resume(ckpt: Path, saved: dict, saved_vocab: int, current: dict,
                 current_vocab: int) -> list[str]:
    """Raise CheckpointError naming every architecture setting that differs; return the other
    changed settings as `key: saved -> current` lines."""
    before, after = architecture(saved, saved_vocab), architecture(current, current_vocab)
    clashes = [f"{key}: {before[key]} in the checkpoint, {after[key]} in this config"
               for key in before if before[key] != after[key]]
    if clashes:
        raise CheckpointError(
            f"{ckpt}: saved by a model of another shape; " + "; ".join(clashes)
            + ". Resume with the checkpoint's model settings, or point train.dir elsewhere "
            "to start a new run.")
    before, after = flatten(saved), flatten(current)
    return [f"{key}: {before.get(key)} -> {after.get(key)}"
            for key in sorted(before.keys() | after.keys())
            if before.get(key) != after.get(key) and key not in ROUTINE]
