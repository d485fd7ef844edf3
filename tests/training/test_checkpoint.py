"""Checkpoints: exact resume (same losses and parameters as an uninterrupted run), loading at
another (TP, DP) layout, and damaged checkpoints reported and skipped on resume. Real
processes on gloo for the multi-rank layouts; tiny fp32 models on CPU."""

import json
import shutil

import pytest
import torch

from training.checkpoint import CheckpointWarning, save_checkpoint
from training.checkpoint_format import (
    CheckpointError,
    ShardReader,
    read_index,
    resolve_checkpoint,
    verify,
)
from training.config import TrainingConfig
from training.launch import launch
from training.model import full_state_dict
from training.parallel.grid import destroy_grid
from training.parallel.zero3 import parameters_gathered
from training.trainer import Trainer, setup_process

STEPS = 10


def config(run_dir, tp=1, pp=1, dp=1, dropout=0.0, save_every=5, **train) -> dict:
    return {
        "model": {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 16, "vocab_size": 60,
                  "pad_vocab_to": 8, "dropout": dropout},
        "parallel": {"tp": tp, "pp": pp, "dp": dp, "zero": 1, "bucket_mb": 0.02},
        "batch": {"micro": 2, "global": 8},
        "optim": {"lr": 1e-2, "min_lr": 1e-3, "warmup": 2, "weight_decay": 0.1, "clip": 0.5},
        "train": {"steps": STEPS, "seed": 7, "save_every": save_every, "dir": str(run_dir),
                  **train},
        "data": {"synthetic": True},
    }


def train_segments(plans: list[tuple[dict, int | None]]) -> list:
    """Worker: for each (config, until) build a trainer (resuming if its dir has checkpoints)
    and train to `until`, saving; rank 0 returns (resumed step, losses, full parameters)."""
    setup_process()
    results = []
    for cfg_dict, until in plans:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        start = trainer.step
        records = trainer.run(until=until, on_save=save_checkpoint)
        trainer.close()
        with parameters_gathered(trainer):
            params = full_state_dict(trainer.model, trainer.grid)
        results.append((start, [r["loss"] for r in records], params)
                       if trainer.grid.rank == 0 else None)
    destroy_grid()
    return results


def run_ranks(world: int, plans):
    return train_segments(plans) if world == 1 else launch(world, train_segments, plans)[0]


def global_state(ckpt) -> dict[str, torch.Tensor]:
    """Every global tensor of a checkpoint (parameters and Adam moments), assembled."""
    index = read_index(ckpt)
    reader = ShardReader(ckpt, index)
    return {key: reader.read_full(key) for key in index["tensors"]}


@pytest.mark.parametrize("tp,pp,dp", [(1, 1, 1), pytest.param(2, 2, 2, marks=pytest.mark.slow)])
def test_resume_is_exact(tmp_path, tp, pp, dp):
    """10 steps straight == 5 steps, stop, resume, 5 steps: bit-identical losses, parameters
    and Adam moments. Dropout is on, so the restored RNG states matter too."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    plans = [(config(straight, tp, pp, dp, dropout=0.1, save_every=10), None),
             (config(split, tp, pp, dp, dropout=0.1), 5),
             (config(split, tp, pp, dp, dropout=0.1), None)]
    (start0, losses, _), (start1, first, _), (start2, second, _) = run_ranks(tp * pp * dp, plans)
    assert (start0, start1, start2) == (0, 0, 5)
    assert first + second == losses
    final = "checkpoints/step-00000010"
    expected, resumed = global_state(straight / final), global_state(split / final)
    assert expected.keys() == resumed.keys()
    assert {key.split("/")[0] for key in expected} == {"model", "exp_avg", "exp_avg_sq"}
    assert len(expected) == 3 * (4 + 12 * 2)  # embeddings, final LN; 12 per block
    for key, tensor in expected.items():
        assert torch.equal(tensor, resumed[key]), key
    assert (split / "checkpoints" / "latest").read_text().strip() == "step-00000010"
    index = read_index(split / final)
    assert index["layout"] == {"tp": tp, "pp": pp, "dp": dp, "virtual_stages": 1}
    assert index["consumed_samples"] == 80 and index["optimizer_steps"] == 10
    assert sorted(index["files"]) == [f"rank-{r:05d}.safetensors" for r in range(tp * pp * dp)]


@pytest.fixture(scope="module")
def saved_at_2x2x2(tmp_path_factory):
    """A (TP 2, PP 2, DP 2) run checkpointed at step 5, and its own losses for steps 6..10."""
    run_dir = tmp_path_factory.mktemp("tp2pp2dp2")
    plans = [(config(run_dir, 2, 2, 2), 5), (config(run_dir, 2, 2, 2, save_every=0), None)]
    _, (_, tail, _) = launch(8, train_segments, plans)[0]
    return run_dir / "checkpoints" / "step-00000005", tail


@pytest.mark.slow  # the 8-rank run that saves takes ~50 s on 2 cores
@pytest.mark.parametrize("tp,pp,dp", [(1, 1, 1), (2, 1, 2), (1, 2, 1)])
def test_reshard_continues_the_same_run(saved_at_2x2x2, tmp_path, tp, pp, dp):
    ckpt, expected = saved_at_2x2x2
    (tmp_path / "checkpoints").mkdir()
    shutil.copytree(ckpt, tmp_path / "checkpoints" / ckpt.name)
    plan = [(config(tmp_path, tp, pp, dp, save_every=0), None)]
    ((start, losses, _),) = run_ranks(tp * pp * dp, plan)
    assert start == 5
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0)


@pytest.fixture
def three_checkpoints(tmp_path):
    """Steps 4 and 6 saved (8 was too, then removed), and the losses of steps 5..8."""
    cfg = config(tmp_path, save_every=2, keep_last=3)
    ((_, losses, _),) = run_ranks(1, [(cfg, 8)])
    root = tmp_path / "checkpoints"
    shutil.rmtree(root / "step-00000008")
    return cfg, root, losses[4:]


def resume(cfg: dict) -> tuple[Trainer, list[float], list[str]]:
    with pytest.warns(CheckpointWarning) as caught:
        trainer = Trainer(TrainingConfig.model_validate(cfg))
    losses = [r["loss"] for r in trainer.run(until=8)]
    trainer.close()
    destroy_grid()
    return trainer, losses, [str(w.message) for w in caught]


def test_keeps_last_n_and_points_latest(tmp_path):
    run_ranks(1, [(config(tmp_path, save_every=2, keep_last=2), 7)])
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000006", "step-00000007"]
    assert resolve_checkpoint(tmp_path) == root / "step-00000007"
    assert "rank-00000.safetensors" in json.loads((root / "step-00000007/index.json").read_text())[
        "files"]


def test_corrupt_file_is_reported_and_skipped(three_checkpoints):
    cfg, root, tail = three_checkpoints
    shard = root / "step-00000006" / "rank-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="rank-00000.safetensors: sha256 mismatch"):
        verify(shard.parent, read_index(shard.parent))
    trainer, losses, messages = resume(cfg)
    assert trainer.resumed_from == root / "step-00000004"
    assert any("step-00000006/rank-00000.safetensors: sha256 mismatch" in m for m in messages)
    assert losses == tail


def test_missing_shard_is_reported_and_skipped(three_checkpoints):
    cfg, root, tail = three_checkpoints
    (root / "step-00000006" / "rank-00000.safetensors").unlink()
    trainer, losses, messages = resume(cfg)
    assert trainer.resumed_from == root / "step-00000004"
    assert any("rank-00000.safetensors: missing shard file" in m for m in messages)
    assert losses == tail


def test_partial_directories_are_reported_and_skipped(three_checkpoints):
    cfg, root, tail = three_checkpoints
    (root / "step-00000006" / "index.json").unlink()  # a folder without its index
    partial = root / ".tmp-step-8"  # a save that died before being published
    partial.mkdir()
    (partial / "rank-00000.safetensors").write_bytes(b"\0" * 10)
    trainer, losses, messages = resume(cfg)
    assert trainer.resumed_from == root / "step-00000004"
    assert any(".tmp-step-8: partial checkpoint" in m for m in messages)
    assert any("step-00000006: no index.json" in m for m in messages)
    assert losses == tail
    assert trainer.step == 8


@pytest.mark.parametrize("key,value,message", [
    ("hidden", 16, "model.hidden: 32 in the checkpoint, 16 in this config"),
    # same tensor shapes, another function: only the config comparison can catch it
    ("heads", 2, "model.heads: 4 in the checkpoint, 2 in this config"),
    ("vocab_size", 58, r"vocabulary size \(unpadded\): 60 in the checkpoint, 58 in this config")])
def test_other_model_config_is_a_clear_error(three_checkpoints, key, value, message):
    cfg, root, _ = three_checkpoints
    before = {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    cfg["model"][key] = value
    trainer_cfg = TrainingConfig.model_validate(cfg)
    with pytest.raises(CheckpointError, match=f"step-00000006: saved by a model of another "
                                              f"shape; {message}"):
        Trainer(trainer_cfg)
    destroy_grid()
    assert {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} == before


def test_changed_settings_are_named_on_resume(three_checkpoints, capsys):
    cfg, root, _ = three_checkpoints
    cfg["optim"]["lr"] = 2e-2
    cfg["train"]["steps"] = 20  # routine: not reported
    trainer = Trainer(TrainingConfig.model_validate(cfg))
    trainer.close()
    destroy_grid()
    assert trainer.step == 6
    line = next(x for x in capsys.readouterr().out.splitlines() if "changed settings" in x)
    assert line.endswith("step-00000006: resuming with changed settings: optim.lr: 0.01 -> 0.02")


def interleaved(run_dir, pp: int, virtual_stages: int, save_every=5) -> dict:
    cfg = config(run_dir, pp=pp, save_every=save_every)
    cfg["model"]["layers"] = 4
    cfg["parallel"].update(virtual_stages=virtual_stages,
                           schedule="interleaved" if virtual_stages > 1 else "1f1b")
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("pp,virtual_stages", [(1, 1), (2, 1)])
def test_reshard_from_virtual_stages(tmp_path, pp, virtual_stages):
    """Saved by PP 2 with 2 virtual stages per rank (each rank holds blocks {r, r+2}), resumed
    at PP 1 and at PP 2 without interleaving (each rank a contiguous half): the same run."""
    saved = tmp_path / "saved"
    plans = [(interleaved(saved, 2, 2), 5), (interleaved(saved, 2, 2, save_every=0), None)]
    _, (_, expected, _) = launch(2, train_segments, plans)[0]
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(saved / "checkpoints" / "step-00000005",
                    resumed / "checkpoints" / "step-00000005")
    plan = [(interleaved(resumed, pp, virtual_stages, save_every=0), None)]
    ((start, losses, _),) = run_ranks(pp, plan)
    assert start == 5
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0)
