"""The on-disk checkpoint format: layout-free global tensors cut into per-rank shards.

A checkpoint is a folder `checkpoints/step-00000010/` holding

- `rank-00003.safetensors` per rank: plain tensors (`model/<name>`, `exp_avg/<name>`,
  `exp_avg_sq/<name>`, `rng/...`), each a box of a global tensor;
- `index.json`: for every global tensor its global shape and the boxes (file, offset, shape,
  and `name` when the box's tensor name in the file is not the key) that tile it, the
  sha256 of every file, the trainer's counters and the config.

Any layout reads a checkpoint by asking for the box of each global tensor it holds
(`read_box`); the boxes on disk may be cut differently. Nothing is unpickled: tensors come
from safetensors and metadata from JSON. A folder only gets its `step-N` name once every file
and the index are written and synced, so a `step-N` folder is complete unless damaged later;
damage is caught by the sha256s (`verify`).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from curation.shards import file_sha256

FORMAT = "textmill-checkpoint-1"
INDEX_NAME = "index.json"
LATEST_NAME = "latest"
STEP_PATTERN = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the folder and the file."""


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def tmp_dir_name(step: int) -> str:
    return f".tmp-step-{step}"


def rank_file_name(rank: int) -> str:
    return f"rank-{rank:05d}.safetensors"


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') bytes to disk before it is published."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    fsync_path(tmp)
    os.replace(tmp, path)


def read_index(ckpt: Path) -> dict:
    path = Path(ckpt) / INDEX_NAME
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: no {INDEX_NAME} (an incomplete or partial checkpoint)")
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable index ({err})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} index")
    return index


def verify(ckpt: Path, index: dict, files: list[str] | None = None) -> None:
    """Check that every file listed in the index (or just `files`) exists with its sha256."""
    ckpt = Path(ckpt)
    for name in index["files"] if files is None else files:
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing shard file listed in {ckpt / INDEX_NAME}")
        if file_sha256(path) != index["files"][name]:
            raise CheckpointError(f"{path}: sha256 mismatch (the file is corrupt)")


def shard_entry(file: str, global_shape, offset, shape, name: str | None = None) -> dict:
    """A box of a global tensor stored in `file`; `name` is its tensor name in the file when
    that is not the global key (one rank storing several boxes of one tensor)."""
    entry = {"file": file, "global_shape": list(global_shape), "offset": list(offset),
             "shape": list(shape)}
    if name is not None:
        entry["name"] = name
    return entry


def merge_entries(per_rank: list[list[tuple[str, dict]]]) -> dict[str, dict]:
    """[(key, entry), ...] per rank -> {key: {"shape": global shape, "shards": [box, ...]}}."""
    tensors: dict[str, dict] = {}
    for entries in per_rank:
        for key, entry in entries:
            record = tensors.setdefault(key, {"shape": entry["global_shape"], "shards": []})
            if record["shape"] != entry["global_shape"]:
                raise CheckpointError(f"{key}: ranks disagree on the global shape "
                                      f"({record['shape']} vs {entry['global_shape']})")
            record["shards"].append({k: entry[k] for k in ("file", "offset", "shape", "name")
                                     if k in entry})
    return tensors


def flat_range_boxes(shape, start: int, end: int) -> list[tuple[list[int], list[int]]]:
    """(offset, shape) boxes that cover elements [start, end) of a row-major tensor of
    `shape`, in order: how a ZeRO shard's flat range of a parameter is stored."""
    if start >= end:
        return []
    if len(shape) == 1:
        return [([start], [end - start])]
    inner = math.prod(shape[1:])
    first, last = start // inner, end // inner
    boxes = []
    if start % inner:  # a partial first row
        stop = min(end, (first + 1) * inner)
        boxes += [([first, *o], [1, *s]) for o, s in
                  flat_range_boxes(shape[1:], start - first * inner, stop - first * inner)]
        first += 1
        if stop == end:
            return boxes
    if last > first:
        boxes.append(([first] + [0] * (len(shape) - 1), [last - first, *shape[1:]]))
    if end % inner:  # a partial last row
        boxes += [([last, *o], [1, *s]) for o, s in
                  flat_range_boxes(shape[1:], 0, end - last * inner)]
    return boxes


class ShardReader:
    """Reads boxes of global tensors out of a checkpoint's shard files (opened lazily)."""

    def __init__(self, ckpt: Path, index: dict):
        self.ckpt, self.index = Path(ckpt), index
        self._open: dict[str, object] = {}

    def _file(self, name: str):
        if name not in self._open:
            path = self.ckpt / name
            try:
                self._open[name] = safe_open(str(path), framework="pt")
            except Exception as err:  # safetensors raises its own error types
                raise CheckpointError(f"{path}: unreadable shard file ({err})") from None
        return self._open[name]

    def global_shape(self, key: str) -> list[int]:
        if key not in self.index["tensors"]:
            raise CheckpointError(f"{self.ckpt}: no tensor {key!r} in the checkpoint")
        return self.index["tensors"][key]["shape"]

    def read_box(self, key: str, offset, shape) -> torch.Tensor:
        """The box [offset, offset + shape) of global tensor `key`, assembled from every
        stored shard that overlaps it."""
        self.global_shape(key)
        out = torch.empty(tuple(shape), dtype=torch.float32)
        covered = 0
        for shard in self.index["tensors"][key]["shards"]:
            lo = [max(a, b) for a, b in zip(offset, shard["offset"], strict=True)]
            hi = [min(a + n, b + m) for a, n, b, m in
                  zip(offset, shape, shard["offset"], shard["shape"], strict=True)]
            if any(h <= low for low, h in zip(lo, hi, strict=True)):
                continue
            src = tuple(slice(low - s, h - s) for low, h, s in zip(lo, hi, shard["offset"],
                                                                  strict=True))
            dst = tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, offset, strict=True))
            name = shard.get("name", key)
            out[dst] = self._file(shard["file"]).get_slice(name)[src] if src else \
                self._file(shard["file"]).get_tensor(name)
            covered += math.prod(h - low for low, h in zip(lo, hi, strict=True))
        if covered != out.numel():
            raise CheckpointError(f"{self.ckpt}: the stored shards of {key!r} cover {covered} of "
                                  f"the {out.numel()} elements requested")
        return out

    def read_full(self, key: str) -> torch.Tensor:
        shape = self.global_shape(key)
        return self.read_box(key, [0] * len(shape), shape)

    def read_tensor(self, file: str, key: str) -> torch.Tensor:
        """A tensor stored whole in one file (per-rank state such as RNG)."""
        try:
            return self._file(file).get_tensor(key)
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(f"{self.ckpt / file}: no tensor {key!r} ({err})") from None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Published `step-N` folders under `root`, newest first."""
    root = Path(root)
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir()
             and (m := STEP_PATTERN.match(p.name))] if root.is_dir() else []
    return sorted(found, reverse=True)


def publish(root: Path, tmp: Path, step: int, keep_last: int) -> Path:
    """Rename a fully written temporary folder to `step-N`, then point `latest` at it, then
    drop all but the newest `keep_last` checkpoints and any stale temporary folders."""
    final = root / step_dir_name(step)
    if final.exists():  # the same step saved again (a resumed run that re-reached it)
        shutil.rmtree(final)
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(root)
    latest_tmp = root / f".{LATEST_NAME}.tmp"
    latest_tmp.write_text(final.name + "\n")
    fsync_path(latest_tmp)
    os.replace(latest_tmp, root / LATEST_NAME)
    for _, old in list_checkpoints(root)[keep_last:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def resolve_checkpoint(path: Path) -> Path:
    """A step folder, or a `checkpoints/` folder or run folder whose `latest` names one."""
    path = Path(path)
    if (path / INDEX_NAME).is_file():
        return path
    for root in (path, path / "checkpoints"):
        if (root / LATEST_NAME).is_file():
            return root / (root / LATEST_NAME).read_text().strip()
    raise CheckpointError(f"{path}: neither a checkpoint folder (no {INDEX_NAME}) nor a folder "
                          f"with a `{LATEST_NAME}` pointer")
