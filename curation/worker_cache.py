"""Files a worker loads once per process (a model, a task table) and reloads if rewritten."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_LOADED: dict[tuple[str, Callable], tuple[int, Any]] = {}


def load_once(path: Path | str, loader: Callable[[str], Any]) -> Any:
    """`loader(path)`, cached in this process by path and loader; loaded again when the
    file's modification time changes (a rerun that rewrote it)."""
    path = str(path)
    mtime = os.stat(path).st_mtime_ns
    cached = _LOADED.get((path, loader))
    if cached is None or cached[0] != mtime:
        cached = _LOADED[(path, loader)] = (mtime, loader(path))
    return cached[1]
