"""Shared set-up of the Llama-block and context-parallel tests: the small llama config they
train, and the check that a run saved at one layout continues at one process."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from tests.training.test_checkpoint import train_segments
from training.launch import launch

STEPS = 4


def llama_config(run_dir, tp=1, pp=1, dp=1, kv_heads=2, **parallel) -> dict:
    return {
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kv_heads": kv_heads,
                  "ffn_hidden": 48, "seq_len": 16, "vocab_size": 60, "pad_vocab_to": 8},
        "parallel": {"tp": tp, "pp": pp, "dp": dp, "zero": int(dp > 1), "bucket_mb": 0.02,
                     **parallel},
        "batch": {"micro": 1, "global": 4},
        "optim": {"lr": 3e-3, "min_lr": 1e-3, "warmup": 2, "weight_decay": 0.1, "clip": 0.5},
        "train": {"steps": STEPS, "eval_every": STEPS, "eval_iters": 1, "seed": 7,
                  "dir": str(run_dir)},
        "data": {"synthetic": True},
    }


def resume_at_one_process(tmp_path: Path, world: int,
                          config: Callable[[Path, bool, int], dict]) -> None:
    """Train `config(dir, parallel=True, save_every=2)` on `world` processes to step 2 (saved),
    then on to the end; a one-process run (`config(dir, False, 0)`) resumed from the step-2
    checkpoint must reproduce the tail's losses (1e-5)."""
    run = tmp_path / "parallel"
    _, (_, tail, _) = launch(world, train_segments, [(config(run, True, 2), 2),
                                                      (config(run, True, 0), None)])[0]
    resumed = tmp_path / "one"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / "step-00000002",
                    resumed / "checkpoints" / "step-00000002")
    ((start, losses, _),) = train_segments([(config(resumed, False, 0), None)])
    assert start == 2
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64),
                               torch.tensor(tail, dtype=torch.float64), rtol=1e-5, atol=0)
