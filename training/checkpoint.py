"""Saving and resuming a Trainer: model, ZeRO-sharded Adam moments, counters, RNG states and
config, as global tensors (checkpoint_format.py) that any (TP, PP, DP, v) layout can read.

Save: the DP ranks all-gather the Adam moments (sharded over flat bucket ranges) back into
the flat layout, so every parameter's moments are whole again; each distinct piece of a
global tensor is then written once, by one rank: TP-replicated parameters by TP rank 0, the
pipeline's copy of the tied embedding never, and the parameters spread round-robin over the
DP ranks so the writes run in parallel. Everything lands in `checkpoints/.tmp-step-N`; rank 0
merges the ranks' shard lists into `index.json` and publishes the folder (rename, `latest`).

Load: each rank asks for the box of every global tensor that its parameters cover in the
*current* layout, so the saving layout does not matter. RNG states are restored per rank when
the layout is unchanged (exact resume); after a reshard every rank takes rank 0's.
"""

from __future__ import annotations

import json
import shutil
import warnings
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

if TYPE_CHECKING:
    from training.loop import Trainer

MOMENTS = ("exp_avg", "exp_avg_sq")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped on resume (corrupt, partial or missing files)."""


def checkpoint_root(trainer: Trainer) -> Path:
    return Path(trainer.cfg.train.dir) / "checkpoints"


def global_parameters(trainer: Trainer) -> list[tuple[str, nn.Parameter]]:
    """(global name, parameter) of this rank, in a fixed order; names come from the model."""
    return list(trainer.model.named_parameters())


def global_box(param: nn.Parameter, trainer: Trainer) -> tuple[list[int], list[int]]:
    """(global shape, offset of this rank's piece): a TP-split dimension is `tp` times longer
    and this rank's slice starts at tp_rank times its length."""
    shape, offset = list(param.shape), [0] * param.ndim
    if param.tp_dim is not None:
        shape[param.tp_dim] *= trainer.grid.layout.tp
        offset[param.tp_dim] = trainer.grid.tp_rank * param.shape[param.tp_dim]
    return shape, offset


def layout_of(trainer: Trainer) -> dict:
    p = trainer.cfg.parallel
    return {"tp": p.tp, "pp": p.pp, "dp": p.dp, "virtual_stages": p.virtual_stages}


def _world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def flat_moments(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Adam moments in the flat parameter-buffer layout (whole on every DP rank)."""
    buckets, optimizer = trainer.buckets, trainer.optimizer
    flat = {}
    for kind in MOMENTS:
        local, full = getattr(optimizer, kind), torch.zeros_like(buckets.params)
        cursor = 0
        for index, bucket in enumerate(buckets.buckets):
            lo, hi = buckets.local_range(index)
            piece = local[cursor: cursor + hi - lo]
            if buckets.sharded:
                comm.all_gather_into(full[bucket.start: bucket.end], piece, buckets.group)
            else:
                full[lo:hi] = piece
            cursor += hi - lo
        flat[kind] = full
    return flat


def _load_flat_moments(trainer: Trainer, flat: dict[str, torch.Tensor]) -> None:
    buckets, optimizer = trainer.buckets, trainer.optimizer
    for kind in MOMENTS:
        local, cursor = getattr(optimizer, kind), 0
        for index in range(len(buckets.buckets)):
            lo, hi = buckets.local_range(index)
            local[cursor: cursor + hi - lo].copy_(flat[kind][lo:hi])
            cursor += hi - lo


@torch.no_grad()
def save_checkpoint(trainer: Trainer) -> Path:
    """Write the trainer's state at its current step; collective over every rank."""
    grid, root = trainer.grid, checkpoint_root(trainer)
    tmp = root / tmp_dir_name(trainer.step)
    if grid.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    comm.barrier()
    moments = flat_moments(trainer)
    file, dp = rank_file_name(grid.rank), grid.layout.dp
    tensors, entries = {}, {}
    for i, (name, param) in enumerate(global_parameters(trainer)):
        replica = param.tp_dim is None and grid.tp_rank != 0
        if getattr(param, "duplicate_of", None) or replica or i % dp != grid.dp_rank:
            continue
        global_shape, offset = global_box(param, trainer)
        start = trainer.buckets.offsets[param]
        pieces = {"model": param.detach()}
        pieces.update({kind: moments[kind][start: start + param.numel()].view_as(param)
                       for kind in MOMENTS})
        for kind, tensor in pieces.items():
            tensors[f"{kind}/{name}"] = tensor.to("cpu", copy=True).contiguous()
            entries[f"{kind}/{name}"] = shard_entry(file, global_shape, offset, param.shape)
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
    moments = {kind: torch.zeros_like(trainer.buckets.params) for kind in MOMENTS}
    for name, param in global_parameters(trainer):
        stored = getattr(param, "duplicate_of", None) or name
        global_shape, offset = global_box(param, trainer)
        found = reader.global_shape(f"model/{stored}")
        if found != global_shape:
            raise CheckpointError(f"{ckpt}: {stored} has global shape {found}, this model "
                                  f"needs {global_shape} (a different model config?)")
        param.data.copy_(reader.read_box(f"model/{stored}", offset, param.shape))
        start = trainer.buckets.offsets[param]
        for kind in MOMENTS:
            box = reader.read_box(f"{kind}/{stored}", offset, param.shape)
            moments[kind][start: start + param.numel()] = box.flatten().to(moments[kind].device)
    _load_flat_moments(trainer, moments)
    trainer.optimizer.steps = index["optimizer_steps"]
    trainer.step, trainer.consumed_samples = index["step"], index["consumed_samples"]
    trainer.skipped_steps = index.get("skipped_steps", 0)  # absent before it was recorded
    _restore_rng(trainer, reader, index)
    return index


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
