"""`train.init_from`: a new run from another run's weights, not a resume."""

from __future__ import annotations

import pytest
import torch

from tests.training.test_checkpoint import config
from training.checkpoint import save_checkpoint
from training.checkpoint_format import CheckpointError, ShardReader, read_index
from training.config import TrainingConfig
from training.model import full_state_dict
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process


def _trainer(cfg: dict) -> Trainer:
    setup_process()
    return Trainer(TrainingConfig.model_validate(cfg))


def test_init_from_takes_weights_only_and_a_rerun_resumes_its_own_run(tmp_path):
    base = _trainer(config(tmp_path / "base", save_every=4))
    base.run(until=4, on_save=save_checkpoint)
    trained = full_state_dict(base.model, base.grid)
    base.close()
    destroy_grid()

    warm_cfg = config(tmp_path / "warm", save_every=2, init_from=str(tmp_path / "base"))
    warm_cfg["optim"]["lr"] = 3e-3
    warm = _trainer(warm_cfg)
    assert warm.resumed_from is None and warm.initialized_from.name == "step-00000004"
    assert (warm.step, warm.consumed_samples, warm.optimizer.steps) == (0, 0, 0)
    started = full_state_dict(warm.model, warm.grid)
    assert all(torch.equal(started[k], trained[k]) for k in trained)
    losses = [r["loss"] for r in warm.run(until=2, on_save=save_checkpoint)]
    assert losses[0] < 4.0  # log(60) ≈ 4.09 from scratch: it starts trained
    after = full_state_dict(warm.model, warm.grid)
    warm.close()
    destroy_grid()

    again = _trainer(warm_cfg)  # the warm-up's own checkpoint wins over init_from
    assert again.resumed_from is not None and again.initialized_from is None
    assert again.step == 2
    assert all(torch.equal(full_state_dict(again.model, again.grid)[k], after[k]) for k in after)
    again.close()
    destroy_grid()


def test_init_from_another_model_is_a_clear_error(tmp_path):
    base = _trainer(config(tmp_path / "base", save_every=2))
    base.run(until=2, on_save=save_checkpoint)
    base.close()
    destroy_grid()
    other = config(tmp_path / "other", init_from=str(tmp_path / "base"))
    other["model"]["hidden"] = 64
    with pytest.raises(CheckpointError, match="train.init_from: .*global shape"):
        _trainer(other)
    destroy_grid()
    with pytest.raises(CheckpointError, match="train.init_from: .*no checkpoint"):
        _trainer(config(tmp_path / "x", init_from=str(tmp_path / "nowhere")))
    destroy_grid()


@pytest.mark.parametrize("zero", [1, 3])
def test_bf16_init_from_starts_the_master_weights_from_the_checkpoint(tmp_path, zero):
    """The fp32 master copy is what the first update starts from: it must be the checkpoint's
    weights, not the fresh initialisation (stage 3: only this rank's shard exists)."""
    base = _trainer(config(tmp_path / "base", save_every=2))
    base.run(until=2, on_save=save_checkpoint)
    base.close()
    destroy_grid()
    warm_cfg = config(tmp_path / f"warm{zero}", init_from=str(tmp_path / "base"))
    warm_cfg.update(dtype="bf16")
    warm_cfg["parallel"]["zero"] = zero
    warm = _trainer(warm_cfg)
    reader = ShardReader(warm.initialized_from, read_index(warm.initialized_from))
    names = {param: name for name, param in warm.model.named_parameters()}
    optimizer = warm.optimizer
    for seg in optimizer.segments:
        start = seg.lo - warm.buckets.offsets[seg.param]
        stored = reader.read_full(f"model/{names[seg.param]}").flatten()
        assert torch.equal(optimizer.master_of(seg), stored[start: start + seg.hi - seg.lo])
    warm.close()
    destroy_grid()
