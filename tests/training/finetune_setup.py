"""A tiny pre-trained base (checkpoint + curated folder holding its tokenizer) and a JSONL
task set, for the fine-tuning tests. The task: a Python stdlib function's first docstring line
as the prompt, its name as the completion."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

from training.batches import SyntheticBatchSource
from training.checkpoint import save_checkpoint
from training.config import TrainingConfig
from training.parallel.grid import destroy_grid
from training.trainer import Trainer


def docstring_examples(limit: int) -> list[dict]:
    import json as json_module
    import textwrap

    examples = []
    for module in (textwrap, json_module, inspect):
        for name, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if inspect.isfunction(obj) else None
            if doc and not name.startswith("_"):
                examples.append({"prompt": doc.splitlines()[0][:40] + "\ndef",
                                 "completion": f" {name}"})
    return examples[:limit]


def write_task(path: Path, limit: int = 40) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in docstring_examples(limit)))
    return path


def make_base(root: Path, arch: str = "gpt2", steps: int = 2) -> Path:
    """Train a tiny base a couple of steps on synthetic tokens over a real tokenizer's
    vocabulary; returns its run folder."""
    from tests.training.test_export_hf import train_tokenizer

    curated = root / "curated"
    curated.mkdir(parents=True, exist_ok=True)
    vocab = train_tokenizer(curated / "tokenizer.json")
    model = {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 48, "pad_vocab_to": 64}
    if arch == "llama":
        model.update(arch="llama", kv_heads=2, ffn_hidden=48)
    cfg = TrainingConfig.model_validate({
        "model": model, "batch": {"micro": 4, "global": 8}, "optim": {"lr": 1e-2, "warmup": 1},
        "train": {"steps": steps, "save_every": steps, "dir": str(root / "base"), "seed": 3},
        "data": {"curated": str(curated)}})
    source = SyntheticBatchSource(vocab, cfg.model.seq_len, seed=3)
    trainer = Trainer(cfg, sources=(source, source))
    trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    return root / "base"


def finetune_raw(base: Path, task: Path, run_dir: Path, *, ggpo: bool = True,
                 lora: dict | None = None, **train) -> dict:
    return {
        "parallel": {"zero": 1, "bucket_mb": 0.001},
        "batch": {"micro": 2, "global": 8},
        "optim": {"lr": 2e-2, "min_lr": 1e-3, "warmup": 1, "weight_decay": 0.1, "clip": 1.0},
        "train": {"dir": str(run_dir), "seed": 5, **train},
        "finetune": {"init_from": str(base),
                     "lora": {"rank": 4, "alpha": 8, "targets": ["qkv", "proj", "fc"]}
                     if lora is None else lora,
                     "ggpo": {"sigma": 0.05, "beta": 0.5} if ggpo else None,
                     "data": {"paths": [str(task)], "prompt_field": "prompt",
                              "completion_field": "completion"},
                     "epochs": 2, "eval_fraction": 0.25},
    }
