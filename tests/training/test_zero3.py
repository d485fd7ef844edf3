"""ZeRO stage 3 (parameters sharded over DP, gathered per layer) on real gloo ranks: the same
run as one process at stage 0 (fp32, 1e-5) at DP 4 (with full recomputation) and at TP 2 x DP 2
with sequence parallelism; bf16 tracks fp32 over 20 steps; while a block computes only it and
the next layer are gathered; stage 2 with several micro-batches never holds the full
gradients."""

import pytest
import torch

from tests.training.test_trainer_equivalence import assert_same_run, tiny_config, train_and_gather
from training.config import TrainingConfig
from training.launch import launch
from training.parallel.grid import destroy_grid
from training.parallel.zero_memory import resident_bytes
from training.trainer import Trainer, setup_process


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    (result,) = train_and_gather([tiny_config(dir=str(tmp_path_factory.mktemp("ref")))])
    return result


def test_stage3_at_dp4_and_tp2_dp2_equals_one_process(reference, tmp_path):
    dp4 = tiny_config(dp=4, zero=3, dir=str(tmp_path / "dp4"))
    dp4["parallel"]["recompute"] = "full"  # a block's forward rerun inside its backward
    tp2 = tiny_config(tp=2, dp=2, zero=3, dir=str(tmp_path / "tp2dp2"))
    tp2["parallel"]["sequence_parallel"] = True
    for result in launch(4, train_and_gather, [dp4, tp2])[0]:
        assert_same_run(result, reference)


def bf16_losses(cfg_dicts: list[dict]) -> list:
    setup_process()
    losses = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        losses.append([r["loss"] for r in trainer.run()])
        trainer.close()
    destroy_grid()
    return losses


BF16_STEPS = 20
BF16_LOSS_RTOL = 0.02  # as stages 0-2 (test_zero_memory): bf16 params/grads vs fp32, 20 steps


def test_stage3_bf16_tracks_fp32_over_20_steps(tmp_path):
    configs = []
    for dtype in ("fp32", "bf16"):
        cfg = tiny_config(dp=2, zero=3, dir=str(tmp_path / dtype), steps=BF16_STEPS,
                          eval_every=0)
        cfg["dtype"] = dtype
        configs.append(cfg)
    fp32, bf16 = (torch.tensor(losses) for losses in launch(2, bf16_losses, configs)[0])
    torch.testing.assert_close(bf16, fp32, rtol=BF16_LOSS_RTOL, atol=0)
    assert bf16[-1] < bf16[0] - 0.5


def watch_block_forward(cfg_dicts: list[dict]) -> list:
    """Worker: when block 1 starts computing, which units are gathered or gathering, and the
    parameter bytes this rank holds (counted from the tensors) against shard + those units."""
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(cfg_dicts[0]))
    gatherer, seen = trainer.gatherer, []

    def snapshot(_module, _args):
        live = [u for u in gatherer.units if u.gathered or u.pending]
        seen.append(({u.name for u in live}, resident_bytes(trainer.buckets, trainer.optimizer),
                     sum(p.numel() for u in live for p in u.params)))

    trainer.model.blocks["1"].register_forward_pre_hook(snapshot)  # after the gatherer's
    trainer.run()
    trainer.close()
    destroy_grid()
    buckets = trainer.buckets
    between_steps = {"freed": all(not full.untyped_storage().nbytes()
                                  for full in buckets.full_params),
                     "held": buckets.param_shards.numel()}
    return [(names, held, live, buckets.numel) for names, held, live in seen], between_steps


def test_only_the_running_layer_and_the_next_are_gathered(tmp_path):
    cfg = tiny_config(dp=2, zero=3, dir=str(tmp_path), steps=1, eval_every=0)
    cfg["model"].update(layers=4, hidden=64)
    cfg["dtype"] = "bf16"
    for seen, between_steps in launch(2, watch_block_forward, [cfg]).values():
        assert between_steps == {"freed": True, "held": seen[0][3] // 2}
        assert len(seen) == 2  # one step, two micro-batches per rank
        for names, held, live, numel in seen:
            # block 1 runs; block 2's all-gather is in flight (prefetched) or done
            assert names == {"blocks.1", "blocks.2"}
            expected = 2 * numel / 2 + 2 * live  # 16Ψ/N's parameter part + the live units
            assert abs(held["mem_params"] - expected) <= 0.1 * expected


def peak_gradient_bytes(cfg_dicts: list[dict]) -> list[tuple[int, int, int]]:
    """Worker: per config, (most gradient bytes alive during one step, counted from the
    tensors after each gradient is moved; the full gradients' bytes; the shard's bytes)."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        buckets, peak = trainer.buckets, [0]

        def note(_param, trainer=trainer, peak=peak):
            peak[0] = max(peak[0], resident_bytes(trainer.buckets, trainer.optimizer)["mem_grads"])

        for param in buckets.offsets:  # runs after GradBuckets' own hook
            param.register_post_accumulate_grad_hook(note)
        trainer.run()
        trainer.close()
        results.append((peak[0], 2 * buckets.numel, 2 * buckets.numel // buckets.dp))
    destroy_grid()
    return results


def test_stage2_accumulates_micro_batches_into_the_shard(tmp_path):
    """Two micro-batches per rank at DP 2: stage 1 holds the full gradients through the
    backward; stage 2 reduce-scatters each bucket per micro-batch and holds the shard plus
    the few buckets being filled or reduced."""
    configs = []
    for zero in (1, 2):
        cfg = tiny_config(dp=2, zero=zero, dir=str(tmp_path / f"z{zero}"), steps=1,
                          eval_every=0)
        cfg["model"].update(layers=8, hidden=64)  # many buckets: few are alive at once
        cfg["dtype"] = "bf16"
        configs.append(cfg)
    for (stage1, full, _), (stage2, _, shard) in launch(2, peak_gradient_bytes,
                                                         configs).values():
        assert stage1 >= full
        assert shard <= stage2 <= 0.75 * full
