"""`train.init_from`: start a new run from another run's weights (continued pre-training).

Unlike resuming (training/checkpoint.py), only the model's parameters are read: the
optimizer's moments, step and sample counters, schedule and RNG states all start fresh,
so a warm-up on selected data (the `select` curation stage) gets its own optimizer,
schedule and data. The parameters are read as global tensors, so the checkpoint's layout
does not matter. A run that already has its own checkpoints resumes those instead: an
interrupted warm-up continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from training.checkpoint import load_parameters
from training.checkpoint_format import (
    INDEX_NAME,
    CheckpointError,
    ShardReader,
    list_checkpoints,
    read_index,
)

if TYPE_CHECKING:
    from training.trainer import Trainer


def resolve(path: str | Path) -> Path:
    """A checkpoint folder (with index.json), or the newest one under a run's folder or its
    `checkpoints/` folder."""
    path = Path(path)
    if (path / INDEX_NAME).exists():
        return path
    for root in (path, path / "checkpoints"):
        found = list_checkpoints(root)
        if found:
            return found[0][1]
    raise CheckpointError(f"train.init_from: {path}: no checkpoint there (a step-N folder with "
                          f"{INDEX_NAME}, or a run folder with checkpoints/)")


@torch.no_grad()
def init_weights(trainer: Trainer, path: str | Path) -> Path:
    """Copy the checkpoint's parameters into the built trainer; nothing else."""
    ckpt = resolve(path)
    reader = ShardReader(ckpt, read_index(ckpt))
    load_parameters(trainer, reader, f"train.init_from: {ckpt}",
                    hint="another model config or vocabulary?")
    if trainer.grid.rank == 0:
        print(f"initialized weights from {ckpt} (fresh optimizer, schedule and data)",
              flush=True)
    return ckpt
