"""ZeRO's memory per rank, counted from the tensors each rank holds after a real step, against
the paper's formulas (bf16 parameters and gradients, fp32 master weights and moments), within
10%, for stages 0-3 and with context parallelism; the first metrics line reports rank 0's
figures; bf16 training tracks fp32. (Stage 3's live layers: test_zero3.py.)"""

import json
from pathlib import Path

import pytest
import torch

from tests.training.test_trainer_equivalence import tiny_config
from training.config import TrainingConfig
from training.launch import launch
from training.parallel.grid import destroy_grid
from training.parallel.zero_memory import predicted_bytes, resident_bytes
from training.trainer import Trainer, setup_process


def memory_config(run_dir, dp: int, zero: int, dtype: str = "bf16") -> dict:
    cfg = tiny_config(dp=dp, zero=zero, dir=str(run_dir), steps=1, eval_every=0)
    cfg["model"].update(hidden=64, layers=2)  # ~110k parameters: padding is negligible
    cfg["parallel"]["bucket_mb"] = 0.05
    cfg["dtype"] = dtype
    return cfg


def step_and_count(cfg_dicts: list[dict]) -> list[tuple[int, dict, dict]]:
    """Worker: one step of each config; (parameters held, resident bytes, first metrics line)."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        trainer.run()
        trainer.close()
        numel = sum(p.numel() for p in trainer.buckets.offsets)
        first = (json.loads((Path(cfg_dict["train"]["dir"]) / "metrics.jsonl").read_text()
                            .splitlines()[0]) if trainer.grid.rank == 0 else None)
        results.append((numel, resident_bytes(trainer.buckets, trainer.optimizer), first))
    destroy_grid()
    return results


@pytest.mark.parametrize("dp", [1, 2, 4])
def test_resident_bytes_match_the_papers_formulas(tmp_path, dp):
    """Stages 0-3 at each DP size; at DP 2's launch also CP 2 x DP 1, whose two CP ranks are
    ZeRO's replicas (the shards span DP x CP)."""
    configs = [memory_config(tmp_path / f"z{zero}", dp, zero) for zero in (0, 1, 2, 3)]
    if dp == 2:
        for zero in (2, 3):
            cfg = memory_config(tmp_path / f"cp-z{zero}", 1, zero)
            cfg["parallel"]["cp"] = 2
            configs.append(cfg)
    per_rank = launch(dp, step_and_count, configs) if dp > 1 else {0: step_and_count(configs)}
    for rank, results in per_rank.items():
        for cfg, (numel, held, first_line) in zip(configs, results, strict=True):
            p = cfg["parallel"]
            want = predicted_bytes(p["zero"], numel, p["dp"], "bf16", cp=p.get("cp", 1))
            where = f"rank {rank} stage {p['zero']} dp {p['dp']} cp {p.get('cp', 1)}"
            for key, expected in want.items():
                assert abs(held[key] - expected) <= 0.1 * expected, \
                    f"{where} {key}: {held[key]} bytes, paper {expected:.0f}"
            total, paper = sum(held.values()), sum(want.values())
            assert abs(total - paper) <= 0.1 * paper
            if rank == 0:
                assert {k: first_line[k] for k in held} == held


def test_fp32_keeps_fp32_everywhere_with_no_master_copy(tmp_path):
    (numel, held, _), = step_and_count([memory_config(tmp_path, 1, 1, "fp32")])
    want = predicted_bytes(1, numel, 1, "fp32")
    for key, expected in want.items():
        assert abs(held[key] - expected) <= 0.1 * expected, key


BF16_STEPS = 20
BF16_LOSS_RTOL = 0.02  # bf16 parameters and gradients vs fp32, same data and init, 20 steps


def test_bf16_run_tracks_fp32(tmp_path):
    """With ZeRO-2 at dp = 1 (the sharded path): bf16 losses stay within 2% of fp32's at every
    one of 20 steps, and training still learns."""
    setup_process()
    losses = {}
    for dtype in ("fp32", "bf16"):
        cfg = tiny_config(zero=2, dir=str(tmp_path / dtype), steps=BF16_STEPS, eval_every=0)
        cfg["dtype"] = dtype
        trainer = Trainer(TrainingConfig.model_validate(cfg))
        losses[dtype] = torch.tensor([r["loss"] for r in trainer.run()])
        trainer.close()
        destroy_grid()
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=BF16_LOSS_RTOL, atol=0)
    assert losses["bf16"][-1] < losses["bf16"][0] - 0.5
