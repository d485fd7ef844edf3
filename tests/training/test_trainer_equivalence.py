"""The trainer's spine: every (TP, DP) layout, with and without the distributed optimizer,
trains the same model as one process: the same loss at every step and the same final
parameters (fp32, 1e-5). Real processes on gloo over loopback."""

import pytest
import torch

from training.config import TrainingConfig
from training.launch import launch
from training.model import full_state_dict
from training.parallel.grid import destroy_grid
from training.parallel.zero3 import parameters_gathered
from training.trainer import Trainer, setup_process

STEPS = 6


def tiny_config(tp=1, dp=1, zero=0, **train) -> dict:
    return {
        "model": {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 16, "vocab_size": 60,
                  "pad_vocab_to": 8},
        "parallel": {"tp": tp, "dp": dp, "zero": zero, "bucket_mb": 0.02},
        # 4 micro-batches at dp=1, 2 per rank at dp=2; clip low enough to bite.
        "batch": {"micro": 2, "global": 8},
        "optim": {"lr": 1e-2, "min_lr": 1e-3, "warmup": 2, "weight_decay": 0.1, "clip": 0.5},
        "train": {"steps": STEPS, "eval_every": 3, "eval_iters": 1, "seed": 7, **train},
        "data": {"synthetic": True},
    }


def train_and_gather(cfg_dicts: list[dict]) -> list:
    """Worker: train each config in turn; rank 0 returns (records, full parameters)."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        records = trainer.run()
        trainer.close()
        with parameters_gathered(trainer):  # ZeRO 3 holds only a shard between steps
            params = full_state_dict(trainer.model, trainer.grid)
        results.append((records, params) if trainer.grid.rank == 0 else None)
    destroy_grid()
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref")
    (result,) = train_and_gather([tiny_config(dir=str(run_dir))])
    return result, run_dir


def assert_same_run(result, reference_result):
    records, params = result
    ref_records, ref_params = reference_result
    losses = torch.tensor([r["loss"] for r in records], dtype=torch.float64)
    ref_losses = torch.tensor([r["loss"] for r in ref_records], dtype=torch.float64)
    torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=0)
    val = torch.tensor([r["val_loss"] for r in records if "val_loss" in r])
    ref_val = torch.tensor([r["val_loss"] for r in ref_records if "val_loss" in r])
    torch.testing.assert_close(val, ref_val, rtol=1e-5, atol=0)
    grad_norms = torch.tensor([r["grad_norm"] for r in records])
    torch.testing.assert_close(grad_norms, torch.tensor([r["grad_norm"] for r in ref_records]),
                               rtol=1e-4, atol=0)
    assert params.keys() == ref_params.keys()
    for name, tensor in params.items():
        expected = ref_params[name]
        if name.endswith("attn.qkv.bias"):
            # The key bias adds a constant to each query's scores, which softmax ignores: its
            # true gradient is 0, so Adam turns rounding noise into steps. It does not change
            # the function; compare the query and value biases only.
            keep = key_bias_free(tensor.numel())
            tensor, expected = tensor[keep], expected[keep]
        # Relative to the tensor's norm: Adam's first steps move every element by about lr
        # whatever its gradient, so an element whose gradient is rounding-sized differs by
        # rounding-sized amounts times lr; the tensor as a whole must agree to 1e-5.
        error = (tensor - expected).norm() / expected.norm().clamp_min(1e-12)
        assert error <= 1e-5, f"{name}: relative error {error:.2e}"


def key_bias_free(numel: int, head_dim: int = 8) -> torch.Tensor:
    """Mask of the QKV bias without its key part (head-major [head][q|k|v][head_dim])."""
    part = torch.arange(numel) // head_dim % 3
    return part != 1


def test_single_process_run_learns_and_logs(reference):
    (records, params), run_dir = reference
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["consumed_samples"] == STEPS * 8
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == STEPS
    assert any((run_dir / "tb").iterdir())
    assert params["embedding.word.weight"].shape == (64, 32)  # 60 padded to a multiple of 8


@pytest.mark.parametrize("tp,dp", [(2, 1), (1, 2), (2, 2), (1, 4)])
def test_layout_equals_single_process(reference, tmp_path, tp, dp):
    """ZeRO stages 0, 1 and 2 at each layout: the run of stage 0 on one process."""
    configs = [tiny_config(tp, dp, zero=zero, dir=str(tmp_path / f"z{zero}"))
               for zero in (0, 1, 2)]
    for result in launch(tp * dp, train_and_gather, configs)[0]:
        assert_same_run(result, reference[0])


def test_zero2_at_one_rank_shards_and_equals_plain(reference, tmp_path):
    """At dp = 1 ZeRO-2 still takes its sharded path (reduce-scatter into a separate shard
    buffer, full gradients freed, all-gather back), with one shard: the same run as plain
    AdamW."""
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(tiny_config(zero=2, dir=str(tmp_path))))
    buckets = trainer.buckets
    records = trainer.run()
    assert buckets.sharded and buckets.shard_grads is not None
    assert all(buffer is None for buffer in buckets.grad_buffers)  # freed once reduced
    assert all(param.grad is None for param in buckets.offsets)
    trainer.close()
    params = full_state_dict(trainer.model, trainer.grid)
    destroy_grid()
    assert_same_run((records, params), reference[0])


def test_batch_rampup_and_split_run(reference, tmp_path):
    """Ramp-up changes the number of micro-batches per step; a run cut in two (`until`) is the
    same run."""
    cfg = tiny_config(dir=str(tmp_path))
    cfg["batch"]["rampup"] = [4, 2, 16]
    cfg["optim"].update(schedule_unit="samples", warmup=8)
    runs = []
    for split in (True, False):
        trainer = Trainer(TrainingConfig.model_validate(cfg))
        runs.append((trainer.run(until=3) if split else []) + trainer.run())
        trainer.close()
        destroy_grid()
    records = runs[0]
    assert [r["global_batch"] for r in records] == [4, 4, 6, 6, 8, 8]
    assert [r["consumed_samples"] for r in records] == [4, 8, 14, 20, 28, 36]
    assert [r["loss"] for r in records] == [r["loss"] for r in runs[1]]
    assert records[-1]["loss"] != reference[0][0][-1]["loss"]
