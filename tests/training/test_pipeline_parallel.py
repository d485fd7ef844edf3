"""Pipeline parallelism trains the same model as one process: GPipe, 1F1B and interleaved 1F1B
executed by the runtime over real gloo processes give the same loss at every step, the same
validation loss and the same final parameters (fp32, 1e-5) for (TP, PP, DP) = (1,2,1), (1,4,1),
(2,2,1), (2,2,2); the tied embedding's two copies stay equal; bad layouts fail in the config."""

import re

import pytest
import torch
import torch.distributed as dist

from tests.training.test_trainer_equivalence import assert_same_run
from training.config import TrainingConfig
from training.launch import launch
from training.model import full_state_dict, split_layers
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

STEPS = 5


def pipeline_config(run_dir, tp=1, pp=1, dp=1, schedule="1f1b", v=1, **parallel) -> dict:
    return {
        "model": {"layers": 4, "hidden": 32, "heads": 4, "seq_len": 16, "vocab_size": 60,
                  "pad_vocab_to": 8},
        "parallel": {"tp": tp, "pp": pp, "dp": dp, "schedule": schedule, "virtual_stages": v,
                     "zero": int(dp > 1), "bucket_mb": 0.02, **parallel},
        # 8 micro-batches at dp=1, 4 per rank at dp=2.
        "batch": {"micro": 1, "global": 8},
        # lr below the trainer test's: Adam moves an element whose gradient is rounding-sized by
        # about lr, and at 1e-2 this 4-layer model differs by 2e-5 already at plain TP=2.
        "optim": {"lr": 3e-3, "min_lr": 1e-3, "warmup": 2, "weight_decay": 0.1, "clip": 0.5},
        "train": {"steps": STEPS, "eval_every": STEPS, "eval_iters": 1, "seed": 7,
                  "dir": str(run_dir)},
        "data": {"synthetic": True},
    }


def whole_model(trainer: Trainer) -> dict[str, torch.Tensor] | None:
    """Every stage's TP-gathered parameters merged on global rank 0 (None elsewhere); the last
    stage's copy of the tied embedding must equal the first stage's."""
    params = full_state_dict(trainer.model, trainer.grid)
    world = dist.get_world_size()
    parts = [None] * world
    if world > 1:
        dist.all_gather_object(parts, params)
    else:
        parts = [params]
    if dist.get_rank() != 0:
        return None
    merged = {}
    for part in parts:
        for name, tensor in part.items():
            merged.setdefault(name, tensor)
    copy = merged.pop("output_word.weight", None)
    if copy is not None:
        torch.testing.assert_close(copy, merged["embedding.word.weight"], rtol=0, atol=0)
    return merged


def train_and_gather(cfg_dicts: list[dict]) -> list:
    """Worker: train each config in turn; rank 0 returns (records, whole model) for each."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        records = trainer.run()
        trainer.close()
        params = whole_model(trainer)
        results.append((records, params) if dist.get_rank() == 0 else None)
    destroy_grid()
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    (result,) = train_and_gather([pipeline_config(tmp_path_factory.mktemp("ref"))])
    return result


def test_two_stages_every_schedule_and_recompute(reference, tmp_path):
    """PP=2 under GPipe, 1F1B, interleaved (v=2: four stages on two ranks), and 1F1B with
    each block recomputed in the backward."""
    layouts = [dict(schedule="gpipe"), dict(schedule="1f1b"), dict(schedule="interleaved", v=2),
               dict(schedule="1f1b", recompute="full")]
    configs = [pipeline_config(tmp_path / str(i), pp=2, **layout)
               for i, layout in enumerate(layouts)]
    results = launch(2, train_and_gather, configs)[0]
    for layout, result in zip(layouts, results, strict=True):
        assert result[1].keys() == reference[1].keys(), layout
        assert_same_run(result, reference)


def test_four_stages_and_tensor_parallel_stages(reference, tmp_path):
    """(1,4,1) with one block per stage; (2,2,1) plain and with sequence parallelism plus
    selective recomputation."""
    configs = [pipeline_config(tmp_path / "a", pp=4),
               pipeline_config(tmp_path / "b", tp=2, pp=2),
               pipeline_config(tmp_path / "c", tp=2, pp=2, sequence_parallel=True,
                               recompute="selective")]
    for result in launch(4, train_and_gather, configs)[0]:
        assert_same_run(result, reference)


def test_three_dimensional_grid(reference, tmp_path):
    """(2,2,2): TP inside a stage, two stages, two data-parallel replicas with ZeRO-1."""
    (result,) = launch(8, train_and_gather, [pipeline_config(tmp_path, tp=2, pp=2, dp=2)])[0]
    assert_same_run(result, reference)


def test_zero_stages_with_a_pipeline(reference, tmp_path):
    """(1,2,2) with ZeRO-1 and ZeRO-2: gradients reduce-scattered per model chunk, the tied
    embedding's deferred sum before its own reduce-scatter, full gradients freed (stage 2)."""
    configs = [pipeline_config(tmp_path / f"z{zero}", pp=2, dp=2, zero=zero) for zero in (1, 2)]
    for result in launch(4, train_and_gather, configs)[0]:
        assert_same_run(result, reference)


def test_uneven_split_gives_extra_layers_to_inner_stages():
    assert split_layers(4, 2) == [range(0, 2), range(2, 4)]
    assert split_layers(6, 4) == [range(0, 1), range(1, 3), range(3, 5), range(5, 6)]
    assert split_layers(5, 2) == [range(0, 3), range(3, 5)]
    assert split_layers(3, 1) == [range(0, 3)]
    sizes = [len(r) for r in split_layers(10, 4)]
    assert sum(sizes) == 10 and max(sizes) - min(sizes) == 1


@pytest.mark.parametrize("change,message", [
    (dict(schedule="interleaved", v=2, global_=5), "multiple of parallel.pp"),
    (dict(schedule="interleaved", v=3), "divisible by parallel.pp * parallel.virtual_stages"),
    (dict(schedule="1f1b", v=2), "needs parallel.schedule: interleaved"),
    (dict(schedule="1f1b", pp=8), "fewer than the pipeline stages"),
    (dict(schedule="1f1b", tp=2, sequence_parallel=True, seq_len=15), "seq_len (15)"),
])
def test_configs_a_schedule_cannot_run_fail_before_any_work(tmp_path, change, message):
    change = dict(change)
    cfg = pipeline_config(tmp_path, tp=change.pop("tp", 1), pp=change.pop("pp", 2),
                          schedule=change.pop("schedule"), v=change.pop("v", 1),
                          **{k: change.pop(k) for k in ("sequence_parallel",) if k in change})
    if "global_" in change:
        cfg["batch"]["global"] = change.pop("global_")
    if "seq_len" in change:
        cfg["model"]["seq_len"] = change.pop("seq_len")
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainingConfig.model_validate(cfg)
