"""Saving and resuming a Trainer: fp32 master weights, Adam moments, counters, RNG states and
config, as global tensors (checkpoint_format.py) that any (TP, PP, DP, v) layout and any ZeRO
stage can read.

Save: each rank writes the optimizer segments it holds (optimizer.py: runs of one parameter's
elements in this rank's ZeRO shard), each cut into the boxes of the global tensor it covers,
so no rank gathers anything: `model/` holds the fp32 master weights (exact even when the
parameters are bf16), `exp_avg/` and `exp_avg_sq/` the moments. TP-replicated parameters are
written by TP rank 0, the pipeline's copy of the tied embedding never. The state is sharded
over DP x CP (the `dp_cp` group, as gradients are reduced there), so with stages 1-2 every
rank of it, CP ranks included, writes its own shard; with stage 0 (state replicated over
DP x CP) the parameters are spread round-robin over those ranks. Everything lands in
`checkpoints/.tmp-step-N`; rank 0 merges the ranks' shard lists into `index.json` and
publishes the folder (rename, `latest`).

Load: each rank reads the boxes its parameters cover in the *current* layout, and for its
own optimizer segments only their boxes of master weights and moments, so the saving layout
and stage do not matter. RNG states are restored per rank when the layout is unchanged
(exact resume); after a reshard every rank takes rank 0's.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn

from training.checkpoint_compat import check_resume
from training.checkpoint_format import (
    FORMAT,
    INDEX_NAME,
    CheckpointError,
    ShardReader,
    file_sha256,
    flat_range_boxes,
    fsync_path,
    list_checkpoints,
    merge_entries,
    publish,
    rank_file_name,
    read_index,
    shard_entry,
    step_dir_name,
    tmp_dir_name,
    verify,
    write_json_atomic,
)
from training.parallel import comm
from training.parallel.optimizer import Segment
from training.parallel.placement import global_box, placement, writes_in_checkpoint

if TYPE_CHECKING:
    from training.trainer import Trainer

MOMENTS = ("exp_avg", "exp_avg_sq")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped on resume (corrupt, partial or missing files)."""


def checkpoint_root(trainer: Trainer) -> Path:
    return Path(trainer.cfg.train.dir) / "checkpoints"


def global_parameters(trainer: Trainer) -> list[tuple[str, nn.Parameter]]:
    """(global name, trained parameter) of this rank, in a fixed order; names come from the
    model. Frozen parameters (a LoRA fine-tune's base) come from elsewhere and are not saved."""
    return [(name, param) for name, param in trainer.model.named_parameters()
            if param.requires_grad]


def layout_of(trainer: Trainer) -> dict:
    p = trainer.cfg.parallel
    layout = {"tp": p.tp, "pp": p.pp, "dp": p.dp, "virtual_stages": p.virtual_stages}
    return {**layout, **{key: getattr(p, key) for key in ("cp", "ep", "etp")
                         if getattr(p, key) != 1}}


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _names(trainer: Trainer) -> dict[nn.Parameter, str]:
    return {param: name for name, param in global_parameters(trainer)}


def _segment_boxes(trainer: Trainer, seg: Segment):
    """The global boxes (offset, shape) that a ZeRO segment of a parameter covers, in flat
    order, with their element counts."""
    param = seg.param
    start = seg.lo - trainer.buckets.offsets[param]
    _, piece_offset = global_box(param, trainer.grid)
    for offset, shape in flat_range_boxes(list(param.shape), start, start + seg.hi - seg.lo):
        yield [a + b for a, b in zip(piece_offset, offset, strict=True)], shape


def _segments_to_write(trainer: Trainer) -> list[Segment]:
    """This rank's optimizer segments that it writes (parallel/placement.py): every one it
    holds when the state is sharded over the parameter's `reduce_over` group (DP x CP, or
    expert-DP: every rank of it holds a distinct shard, CP ranks too); with stage 0 the
    parameters round-robin over that group's ranks. Replicated over TP (ETP): by rank 0 only;
    the pipeline's tied-embedding copy never."""
    order = {param: i for i, (_, param) in enumerate(global_parameters(trainer))}
    return [seg for seg in trainer.optimizer.segments
            if writes_in_checkpoint(seg.param, trainer.grid, order[seg.param],
                                    trainer.buckets.sharded)]


@torch.no_grad()
def save_checkpoint(trainer: Trainer) -> Path:
    """Write the trainer's state at its current step; collective over every rank. Each rank
    writes only its own shard of the master weights (`model/`) and moments."""
    grid, root, optimizer = trainer.grid, checkpoint_root(trainer), trainer.optimizer
    tmp = root / tmp_dir_name(trainer.step)
    if grid.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    comm.barrier()
    file, names = rank_file_name(grid.rank), _names(trainer)
    pieces = []  # (key, global shape, global offset, box shape, values)
    for seg in _segments_to_write(trainer):
        sources = {"model": optimizer.master_of(seg)}
        sources.update({kind: optimizer.state_of(seg, kind) for kind in MOMENTS})
        global_shape, _ = global_box(seg.param, trainer.grid)
        cursor = 0
        for offset, shape in _segment_boxes(trainer, seg):
            size = math.prod(shape)
            for kind, flat in sources.items():
                pieces.append((f"{kind}/{names[seg.param]}", global_shape, offset, shape,
                               flat[cursor: cursor + size].view(shape)))
            cursor += size
    for key, global_shape, offset, values in trainer.checkpoint_extras():
        pieces.append((key, global_shape, offset, list(values.shape), values))
    per_key = Counter(key for key, *_ in pieces)
    tensors, entries = {}, []
    for key, global_shape, offset, shape, values in pieces:
        stored = key if per_key[key] == 1 else f"{key}@{','.join(map(str, offset))}"
        tensors[stored] = values.to("cpu", torch.float32, copy=True).contiguous()
        entries.append((key, shard_entry(file, global_shape, offset, shape,
                                         None if stored == key else stored)))
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if grid.device.type == "cuda":
        tensors["rng/torch_cuda"] = torch.cuda.get_rng_state(grid.device)
    save_file(tensors, str(tmp / file))
    fsync_path(tmp / file)
    part = {"file": file, "sha256": file_sha256(tmp / file), "entries": entries}
    write_json_atomic(tmp / f"{file}.part.json", part)
    comm.barrier()
    if grid.rank == 0:
        _write_index(trainer, tmp)
        publish(root, tmp, trainer.step, trainer.cfg.train.keep_last)
    comm.barrier()
    return root / step_dir_name(trainer.step)


def _write_index(trainer: Trainer, tmp: Path) -> None:
    parts = []
    for rank in range(_world_size()):
        path = tmp / f"{rank_file_name(rank)}.part.json"
        parts.append(json.loads(path.read_text()))
        path.unlink()
    index = {
        "format": FORMAT,
        "step": trainer.step,
        "consumed_samples": trainer.consumed_samples,
        "optimizer_steps": trainer.optimizer.steps,
        "skipped_steps": trainer.skipped_steps,
        "vocab_size": trainer.vocab_size,
        "data_vocab_size": trainer.train_source.vocab_size,
        "layout": layout_of(trainer),
        "config": trainer.cfg.dump(),
        "files": {part["file"]: part["sha256"] for part in parts},
        "tensors": merge_entries([part["entries"] for part in parts]),
    }
    write_json_atomic(tmp / INDEX_NAME, index)


@torch.no_grad()
def load_checkpoint(trainer: Trainer, ckpt: Path, index: dict | None = None) -> dict:
    """Load a checkpoint into a built trainer of any layout; returns the index. Raises
    CheckpointError naming the file on another architecture, missing tensors, shape
    mismatches or unreadable files; prints (rank 0) the settings that changed since the save."""
    index = index or read_index(ckpt)
    data_vocab = trainer.train_source.vocab_size
    changes = check_resume(ckpt, index["config"], index.get("data_vocab_size", data_vocab),
                           trainer.cfg.dump(), data_vocab)
    if changes and trainer.grid.rank == 0:
        print(f"{ckpt}: resuming with changed settings: " + "; ".join(changes), flush=True)
    reader = ShardReader(ckpt, index)
    stored_names = load_parameters(trainer, reader, f"{ckpt}")
    optimizer = trainer.optimizer
    for seg in optimizer.segments:  # only this rank's shard of the optimizer state
        targets = {kind: optimizer.state_of(seg, kind) for kind in MOMENTS}
        _read_segment(trainer, reader, seg, stored_names[seg.param], targets)
    trainer.optimizer.steps = index["optimizer_steps"]
    trainer.step, trainer.consumed_samples = index["step"], index["consumed_samples"]
    trainer.skipped_steps = index.get("skipped_steps", 0)  # absent before it was recorded
    _restore_rng(trainer, reader, index)
    trainer.load_extras(reader)
    return index


def _read_segment(trainer: Trainer, reader: ShardReader, seg: Segment, stored: str,
                  targets: dict[str, torch.Tensor]) -> None:
    """Fill each target (a segment's flat state) from the boxes of `<kind>/<stored>`."""
    for kind, target in targets.items():
        boxes = [reader.read_box(f"{kind}/{stored}", offset, shape).flatten()
                 for offset, shape in _segment_boxes(trainer, seg)]
        target.copy_(torch.cat(boxes))


def load_parameters(trainer: Trainer, reader: ShardReader, where: str,
                    hint: str = "a different model config?") -> dict:
    """Copy the checkpoint's fp32 weights (`model/`) into this rank's parameters and its
    shard of the fp32 master weights (exact even when the parameters are bf16), checking every
    global shape first; returns {parameter: stored name}. With ZeRO 3 only this rank's shard
    of the parameters exists: it is read segment by segment, with the master copy."""
    stored_names = {param: placement(param).stored_as or name
                    for name, param in global_parameters(trainer)}
    for param, stored in stored_names.items():
        global_shape, _ = global_box(param, trainer.grid)
        found = reader.global_shape(f"model/{stored}")
        if found != global_shape:
            raise CheckpointError(f"{where}: {stored} has global shape {found}, this model "
                                  f"needs {global_shape} ({hint})")
    optimizer, sharded_params = trainer.optimizer, trainer.buckets.stage >= 3
    if not sharded_params:
        for param, stored in stored_names.items():
            _, offset = global_box(param, trainer.grid)
            param.data.copy_(reader.read_box(f"model/{stored}", offset, param.shape))
    if sharded_params or optimizer.master is not None:  # fp32 master weights, exact
        for seg in optimizer.segments:
            _read_segment(trainer, reader, seg, stored_names[seg.param],
                          {"model": optimizer.master_of(seg)})
    if sharded_params:
        optimizer.store_master_in_params()
    return stored_names


def _restore_rng(trainer: Trainer, reader: ShardReader, index: dict) -> None:
    same_layout = index["layout"] == layout_of(trainer)
    file = rank_file_name(trainer.grid.rank if same_layout else 0)
    torch.set_rng_state(reader.read_tensor(file, "rng/torch_cpu"))
    if trainer.grid.device.type == "cuda" and index["config"]["device"] == "cuda":
        torch.cuda.set_rng_state(reader.read_tensor(file, "rng/torch_cuda"), trainer.grid.device)


def resume_latest(trainer: Trainer) -> Path | None:
    """Load the newest complete checkpoint under train.dir/checkpoints, if any. Every rank
    verifies the sha256s of a share of the files; a checkpoint any rank finds damaged is
    reported (CheckpointWarning naming the file) and the next older one is tried."""
    root, rank, world = checkpoint_root(trainer), trainer.grid.rank, _world_size()
    if rank == 0:
        for partial in sorted(root.glob(".tmp-step-*")):
            warnings.warn(f"{partial}: partial checkpoint (never published), ignored",
                          CheckpointWarning, stacklevel=2)
    for _, path in list_checkpoints(root):
        problem, index = None, None
        try:
            index = read_index(path)
            verify(path, index, sorted(index["files"])[rank::world])
        except CheckpointError as err:
            problem = str(err)
        ok = torch.tensor([0 if problem else 1], device=trainer.grid.device)
        comm.all_reduce(ok, dist.group.WORLD, op=dist.ReduceOp.MIN)
        if ok.item():
            load_checkpoint(trainer, path, index)
            if rank == 0:
                print(f"resumed from {path} (step {trainer.step}, "
                      f"{trainer.consumed_samples} samples consumed)", flush=True)
            return path
        # A bad index is seen by every rank alike: report it once; a bad file by its checker.
        if problem and (rank == 0 or index is not None):
            warnings.warn(f"skipping checkpoint {path}: {problem}", CheckpointWarning,
                          stacklevel=2)
    return None
