"""ZeRO checkpoints: each rank writes only its own shard of the master weights and moments,
cut into boxes of the global tensors; a checkpoint saved at any ZeRO stage (0-3) and DP size
resumes at any other as the same run; bf16 runs save the exact fp32 master weights."""

import shutil

import pytest
import torch

from tests.training.test_checkpoint import config, run_ranks
from training.checkpoint import save_checkpoint
from training.checkpoint_format import ShardReader, flat_range_boxes, read_index
from training.config import TrainingConfig
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process


def zero_config(run_dir, dp: int, zero: int, **kwargs) -> dict:
    cfg = config(run_dir, dp=dp, **kwargs)
    cfg["parallel"]["zero"] = zero
    return cfg


@pytest.mark.parametrize("shape,start,end", [((5,), 1, 4), ((4, 6), 0, 24), ((4, 6), 3, 5),
                                             ((4, 6), 3, 21), ((4, 6), 6, 18), ((2, 3, 4), 5, 19)])
def test_flat_ranges_become_boxes_in_order(shape, start, end):
    whole = torch.arange(torch.Size(shape).numel()).view(shape)
    pieces = [whole[tuple(slice(o, o + n) for o, n in zip(offset, size, strict=True))].flatten()
              for offset, size in flat_range_boxes(list(shape), start, end)]
    assert torch.equal(torch.cat(pieces), torch.arange(start, end))


@pytest.fixture(scope="module")
def saved_at_zero2_dp2(tmp_path_factory):
    """(DP 2, ZeRO-2) checkpointed at step 5, and its own losses for steps 6..10."""
    run_dir = tmp_path_factory.mktemp("zero2dp2")
    plans = [(zero_config(run_dir, 2, 2), 5), (zero_config(run_dir, 2, 2, save_every=0), None)]
    _, (_, tail, _) = run_ranks(2, plans)
    return run_dir / "checkpoints" / "step-00000005", tail


def test_each_rank_writes_only_its_shard(saved_at_zero2_dp2):
    ckpt, _ = saved_at_zero2_dp2
    index = read_index(ckpt)
    per_file, total = {}, 0
    for key, record in index["tensors"].items():
        if key.startswith("exp_avg/"):
            total += torch.Size(record["shape"]).numel()
            for shard in record["shards"]:
                size = torch.Size(shard["shape"]).numel()
                per_file[shard["file"]] = per_file.get(shard["file"], 0) + size
    assert sorted(per_file) == ["rank-00000.safetensors", "rank-00001.safetensors"]
    for count in per_file.values():
        assert abs(count - total / 2) <= 0.02 * total
    # Shard edges cut parameters: some boxes are stored under their own names.
    assert any("name" in shard for record in index["tensors"].values()
               for shard in record["shards"])


def resume_and_compare(ckpt, expected, tmp_path, dp, zero):
    (tmp_path / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, tmp_path / "checkpoints" / ckpt.name)
    ((start, losses, _),) = run_ranks(dp, [(zero_config(tmp_path, dp, zero, save_every=0),
                                            None)])
    assert start == 5
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64),
                               torch.tensor(expected, dtype=torch.float64), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dp,zero", [(1, 0), (4, 1), (2, 1), (1, 3)])
def test_zero2_checkpoint_resumes_at_other_stages_and_dp(saved_at_zero2_dp2, tmp_path, dp, zero):
    ckpt, expected = saved_at_zero2_dp2
    resume_and_compare(ckpt, expected, tmp_path, dp, zero)


@pytest.fixture(scope="module")
def saved_at_zero3_dp2(tmp_path_factory):
    """(DP 2, ZeRO-3: only parameter shards exist) checkpointed at step 5, and its own losses
    for steps 6..10."""
    run_dir = tmp_path_factory.mktemp("zero3dp2")
    plans = [(zero_config(run_dir, 2, 3), 5), (zero_config(run_dir, 2, 3, save_every=0), None)]
    _, (_, tail, _) = run_ranks(2, plans)
    return run_dir / "checkpoints" / "step-00000005", tail


@pytest.mark.parametrize("dp,zero", [(1, 0), (4, 2)])
def test_zero3_checkpoint_resumes_at_other_stages_and_dp(saved_at_zero3_dp2, tmp_path, dp, zero):
    ckpt, expected = saved_at_zero3_dp2
    resume_and_compare(ckpt, expected, tmp_path, dp, zero)


def test_stage0_checkpoint_resumes_sharded(tmp_path):
    run_dir = tmp_path / "saved"
    plans = [(zero_config(run_dir, 1, 0), 5), (zero_config(run_dir, 1, 0, save_every=0), None)]
    _, (_, tail, _) = run_ranks(1, plans)
    resume_and_compare(run_dir / "checkpoints" / "step-00000005", tail, tmp_path / "r", 2, 2)


def test_bf16_checkpoint_holds_the_fp32_master_weights(tmp_path):
    setup_process()
    cfg = zero_config(tmp_path, 1, 1, save_every=0, steps=3)
    cfg["dtype"] = "bf16"
    trainer = Trainer(TrainingConfig.model_validate(cfg))
    trainer.run()
    ckpt = save_checkpoint(trainer)
    trainer.close()
    destroy_grid()
    reader = ShardReader(ckpt, read_index(ckpt))
    optimizer, rounded = trainer.optimizer, 0
    names = {param: name for name, param in trainer.model.named_parameters()}
    for seg in optimizer.segments:
        stored = reader.read_full(f"model/{names[seg.param]}").flatten()
        assert torch.equal(stored, optimizer.master_of(seg))
        rounded += int((stored != seg.param.detach().float().flatten()).sum())
    assert rounded > 0  # the bf16 parameters are a rounding of what was saved
