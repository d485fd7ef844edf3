"""Files a worker loads once per process (a model, a task table) and reloads if rewritten.

A file on object storage (OUT as a URL) is fetched to a local copy first (fastText and numpy
open local files only), and fetched again when the object changes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curation.storage import local_copy

_LOADED: dict[tuple[str, Callable], tuple[int, Any]] = {}


def load_once(path: Path | str, loader: Callable[[str], Any]) -> Any:
    """`loader(path)`, cached in this process by path and loader; loaded again when the
    file's modification time changes (a rerun that rewrote it)."""
    path = local_copy(path)
    mtime = os.stat(path).st_mtime_ns
    cached = _LOADED.get((path, loader))
    if cached is None or cached[0] != mtime:
        cached = _LOADED[(path, loader)] = (mtime, loader(path))
    return cached[1]
