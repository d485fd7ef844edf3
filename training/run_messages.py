"""What a `pretrain` run says about itself on rank 0: the layout it runs, what a resume
changed in the LR schedule, that there is nothing left to do, and at the end a summary of
what it did and where its checkpoint, metrics and TensorBoard logs are."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from training.checkpoint_format import CheckpointError, list_checkpoints, read_index
from training.config import ParallelConfig, TrainingConfig
from training.optim import LRSchedule, global_batch_size

if TYPE_CHECKING:
    from training.trainer import Trainer


def layout_line(p: ParallelConfig, stages: int) -> str:
    """`2 stages × TP 2 over 4 ranks`: the pipeline and every other dimension it runs with."""
    text = f"{stages} stages"
    if p.virtual_stages > 1:
        text += f" ({p.virtual_stages} per pipeline rank)"
    for name, size in (("TP", p.tp), ("CP", p.cp), ("DP", p.dp), ("EP", p.ep), ("ETP", p.etp)):
        if size > 1:
            text += f" × {name} {size}"
    return f"{text} over {p.world_size} ranks"


def next_step_lr(cfg: TrainingConfig, step: int, consumed_samples: int) -> float:
    """The LR the loop gives step `step + 1` of a run resumed at `step`."""
    schedule = LRSchedule(cfg.optim, cfg.batch, cfg.train.steps, cfg.model.seq_len)
    return schedule.lr(step + 1, consumed_samples + global_batch_size(consumed_samples,
                                                                      cfg.batch))


def schedule_change(saved_config: dict, cfg: TrainingConfig, step: int,
                    consumed_samples: int) -> str | None:
    """How the LR of the next step differs between the checkpoint's schedule and this run's
    (a longer train.steps stretches the cosine); None if it does not, or cannot be told."""
    try:
        saved = TrainingConfig.model_validate(saved_config)
    except ValidationError:
        return None
    before = next_step_lr(saved, step, consumed_samples)
    after = next_step_lr(cfg, step, consumed_samples)
    if abs(before - after) <= 1e-12 * max(abs(before), abs(after), 1e-30):
        return None
    old, new = saved.optim.model_dump(), cfg.optim.model_dump()
    changed = [f"optim.{key} {old[key]} -> {new[key]}" for key in old if old[key] != new[key]]
    if saved.train.steps != cfg.train.steps:
        changed.append(f"train.steps {saved.train.steps} -> {cfg.train.steps}")
    return (f"LR schedule changed since the checkpoint ({', '.join(changed)}): step {step + 1} "
            f"gets LR {after:.4g} instead of {before:.4g}")


class RunReport:
    """Built after the trainer (and its resume); `finish` prints the summary. Rank 0 only."""

    def __init__(self, trainer: Trainer):
        self.trainer, self.start_step = trainer, trainer.step
        self.enabled = trainer.grid.rank == 0
        self.started = time.perf_counter()
        cfg = trainer.cfg
        if not self.enabled:
            return
        if trainer.resumed_from is not None:
            try:
                saved = read_index(trainer.resumed_from)["config"]
            except (CheckpointError, KeyError):
                saved = None
            change = saved and schedule_change(saved, cfg, trainer.step,
                                                 trainer.consumed_samples)
            if change:
                print(change, flush=True)
        if trainer.step >= cfg.train.steps:
            print(f"already at step {trainer.step} ≥ train.steps ({cfg.train.steps}): "
                  "nothing to do (raise train.steps to train on)", flush=True)

    def finish(self, records: list[dict]) -> None:
        if not self.enabled:
            return
        print("\n".join(summary_lines(self.trainer.cfg, self.start_step, records,
                                      time.perf_counter() - self.started)), flush=True)


def summary_lines(cfg: TrainingConfig, start_step: int, records: list[dict],
                  seconds: float) -> list[str]:
    run_dir = Path(cfg.train.dir)
    lines = []
    if records:
        last = records[-1]
        validated = [r for r in records if "val_loss" in r]
        val = (f", val_loss {validated[-1]['val_loss']:.4f} (step {validated[-1]['step']})"
               if validated else "")
        lines.append(f"trained steps {start_step + 1}-{last['step']} of {cfg.train.steps} in "
                     f"{seconds:.1f}s: final loss {last['loss']:.4f}{val}")
    published = list_checkpoints(run_dir / "checkpoints")
    checkpoint = str(published[0][1]) if published else "none (train.save_every: 0)"
    lines += [f"  checkpoint   {checkpoint}",
              f"  metrics      {run_dir / 'metrics.jsonl'}",
              f"  tensorboard  {tensorboard_command()} --logdir {run_dir / 'tb'}"]
    return lines


def tensorboard_command() -> str:
    """`tensorboard`, or the one installed beside this Python when it is not on PATH."""
    beside = Path(sys.executable).parent / "tensorboard"
    return "tensorboard" if shutil.which("tensorboard") or not beside.is_file() else str(beside)


def remove_partial_checkpoints(run_dir: str | Path) -> None:
    """After an interrupt, the temporary folder of a save that was cut off (never published,
    so never resumed from) goes, so that nothing half-written is left behind."""
    for partial in (Path(run_dir) / "checkpoints").glob(".tmp-step-*"):
        shutil.rmtree(partial, ignore_errors=True)
