"""Index cache: built once by rank 0, memory-mapped by every rank.

An entry is a folder named by the sha256 of everything the indices depend on (manifests'
shard hashes, seq_len, seed, weights, split) and the number of samples it holds. The
indices are prefix-stable, so an entry serves any run that needs no more samples than it
holds, and a longer run extends the largest entry instead of rebuilding. Rank 0 builds the
arrays into a temporary folder and renames it into place, so an entry either is complete or
does not exist. Other ranks poll for it; if rank 0 fails it writes `<key>-<size>.error` with
its message and waiting ranks raise that message instead of hanging; a timeout bounds the
wait either way.
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


def _entries(cache_dir: Path, key: str) -> dict[int, Path]:
    """Complete entries of one key, by the number of samples they hold."""
    found = {}
    for path in cache_dir.glob(f"{key}-*"):
        size = path.name[len(key) + 1:]
        if size.isdigit() and (path / DONE_NAME).is_file():
            found[int(size)] = path
    return found


def _fitting(cache_dir: Path, key: str, size: int) -> Path | None:
    """The smallest complete entry holding at least `size` samples."""
    fits = {n: p for n, p in _entries(cache_dir, key).items() if n >= size}
    return fits[min(fits)] if fits else None


def cached_indices(cache_dir: Path, inputs: dict,
                   build: Callable[[dict[str, np.ndarray] | None], dict[str, np.ndarray]],
                   rank: int = 0, timeout_s: float = 3600.0, poll_s: float = 0.2,
                   size: int = 0) -> dict[str, np.ndarray]:
    """The arrays for `size` samples of `inputs`, built on rank 0, memory-mapped everywhere.

    Entries are `<key>-<size>`: any entry of the key holding at least `size` samples serves
    (indices are prefix-stable, so a longer one starts with the shorter). When none does,
    rank 0 calls `build(previous)` with the largest smaller entry (None if there is none) for
    it to extend, publishes the result and removes the entries it supersedes.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(inputs)
    found = _fitting(cache_dir, key, size)
    if found is not None:
        return _load(found)
    entry, error_file = cache_dir / f"{key}-{size}", cache_dir / f"{key}-{size}.error"
    if rank == 0:
        smaller = _entries(cache_dir, key)
        previous = _load(smaller[max(smaller)]) if smaller else None
        _build(entry, error_file, {**inputs, "samples": size}, lambda: build(previous))
        for old in smaller.values():
            shutil.rmtree(old, ignore_errors=True)  # mapped pages stay valid where in use
        return _load(entry)
    deadline = time.monotonic() + timeout_s
    while (found := _fitting(cache_dir, key, size)) is None:
        if error_file.is_file():
            raise IndexBuildError(f"rank 0 failed to build the data indices in {entry}: "
                                  f"{error_file.read_text(encoding='utf-8')}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {rank}: no data indices in {entry} after {timeout_s:.0f}s "
                               "(is rank 0 alive and building them?)")
        time.sleep(poll_s)
    return _load(found)
