"""Index cache: built once by rank 0, memory-mapped by every rank.

An entry is a folder named by the sha256 of everything the indices depend on (manifests'
shard hashes, seq_len, seed, sample counts, weights, split). Rank 0 builds the arrays into a
temporary folder and renames it into place, so an entry either is complete or does not
exist. Other ranks poll for it; if rank 0 fails it writes `<key>.error` with its message and
waiting ranks raise that message instead of hanging; a timeout bounds the wait either way.
A stale error file from an earlier failed run is removed by rank 0 before it builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

DONE_NAME = "_done.json"


class IndexBuildError(RuntimeError):
    """Rank 0 failed to build the indices; raised on the ranks that waited for them."""


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _load(entry: Path) -> dict[str, np.ndarray]:
    names = json.loads((entry / DONE_NAME).read_text(encoding="utf-8"))["arrays"]
    return {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in names}


def _build(entry: Path, error_file: Path, inputs: dict,
           build: Callable[[], dict[str, np.ndarray]]) -> None:
    error_file.unlink(missing_ok=True)
    try:
        arrays = build()
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        (tmp / DONE_NAME).write_text(json.dumps({"inputs": inputs, "arrays": sorted(arrays)},
                                                sort_keys=True), encoding="utf-8")
        try:
            os.replace(tmp, entry)
        except OSError:  # another builder (a second job) finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as err:
        message = "".join(traceback.format_exception_only(type(err), err)).strip()
        error_file.write_text(message, encoding="utf-8")
        raise


def cached_indices(cache_dir: Path, inputs: dict, build: Callable[[], dict[str, np.ndarray]],
                   rank: int = 0, timeout_s: float = 3600.0,
                   poll_s: float = 0.2) -> dict[str, np.ndarray]:
    """The arrays `build()` returns for `inputs`, built on rank 0 and memory-mapped everywhere."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(inputs)
    entry, error_file = cache_dir / key, cache_dir / f"{key}.error"
    if (entry / DONE_NAME).is_file():
        return _load(entry)
    if rank == 0:
        _build(entry, error_file, inputs, build)
        return _load(entry)
    deadline = time.monotonic() + timeout_s
    while not (entry / DONE_NAME).is_file():
        if error_file.is_file():
            raise IndexBuildError(f"rank 0 failed to build the data indices in {entry}: "
                                  f"{error_file.read_text(encoding='utf-8')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank}: no data indices in {entry} after {timeout_s:.0f}s "
                               "(is rank 0 alive and building them?)")
        time.sleep(poll_s)
    return _load(entry)
