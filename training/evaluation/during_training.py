"""`train.eval_tasks_every`: the same evaluation as `pretrain eval`, during training.

Every `eval_tasks_every` steps (a multiple of `save_every`: the snapshot is the checkpoint
just written), rank 0 runs `pretrain eval` on that checkpoint in a child process, so
lm-eval's seeding, imports and memory never touch the training process, and its accuracies
join the step's metrics.jsonl record as `eval/<task>/<k>shot/<metric>`. The other ranks wait
at a barrier. The tasks are checked before training starts (`check_eval_tasks`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from training.config import TrainingConfig
from training.evaluation.harness import OFFLINE
from training.evaluation.report import flat_metrics
from training.parallel import comm


def check_eval_tasks(cfg: TrainingConfig) -> None:
    """Unknown tasks, missing files or a test set other than the corpus was cleaned against
    fail now, not at the first evaluation step."""
    if not cfg.train.eval_tasks_every:
        return
    from training.evaluation.selection import read_decontamination, select_tasks

    decontamination, where = read_decontamination(None if cfg.data.is_synthetic
                                                  else cfg.data.curated)
    select_tasks(cfg.train.eval_tasks, [], decontamination, where)


class TaskEvaluation:
    def __init__(self, cfg: TrainingConfig, rank: int):
        self.cfg, self.rank = cfg, rank

    def after_save(self, step: int, checkpoint: Path) -> dict:
        """The step's task metrics on rank 0 ({} elsewhere, or when no evaluation is due)."""
        every = self.cfg.train.eval_tasks_every
        if not every or step % every:
            return {}
        metrics = self._evaluate(step, checkpoint) if self.rank == 0 else {}
        comm.barrier()
        return metrics

    def _evaluate(self, step: int, checkpoint: Path) -> dict:
        out = Path(self.cfg.train.dir) / "evals" / checkpoint.name
        command = [sys.executable, "-m", "training.cli", "eval", str(checkpoint),
                   "--tasks", *self.cfg.train.eval_tasks, "--shots", self.cfg.train.eval_shots,
                   "--out", str(out), "--device", self.cfg.device]
        done = subprocess.run(command, capture_output=True, text=True,
                              env={**os.environ, **OFFLINE})
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"step {step}: task evaluation (train.eval_tasks_every) failed "
                               f"(the checkpoint {checkpoint} is saved):\n{tail}")
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
        metrics = flat_metrics(results)
        print(f"step {step}: tasks " + ", ".join(f"{k.removeprefix('eval/')} {v:.3f}"
              for k, v in metrics.items() if k.endswith(("/acc", "/acc_norm"))), flush=True)
        return metrics
