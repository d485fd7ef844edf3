"""One `pretrain` per `train.dir`: two runs writing checkpoints and metrics into the same
folder would overwrite each other's steps. The process that starts the run holds the lock
(a bare `pretrain`, or rank 0 under torchrun); ranks that a bare `pretrain` starts itself
find the launcher's hold in their environment and do not take it again."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, ExitStack, nullcontext

from curation.run_lock import FolderLock
from training.launch import under_launcher

HELD_ENV = "TEXTMILL_TRAIN_DIR_LOCKED"


def lock_train_dir(train_dir: str) -> AbstractContextManager:
    """The held lock on `train_dir` (raises LockHeld, one line, when another run has it),
    or nothing to hold for a rank whose launcher or rank 0 holds it."""
    if os.environ.get(HELD_ENV) == os.path.abspath(train_dir):
        return nullcontext()
    if under_launcher() and os.environ.get("RANK") != "0":
        return nullcontext()
    held = ExitStack()
    held.enter_context(FolderLock(train_dir, "pretrain").acquire())
    os.environ[HELD_ENV] = os.path.abspath(train_dir)  # inherited by the ranks we start
    held.callback(os.environ.pop, HELD_ENV, None)
    return held
