"""The LR schedule counted in steps, samples or tokens (Megatron's --lr-warmup-samples /
--lr-decay-samples), and the shipped MT-NLG config holding the paper's schedule exactly."""

import math
import warnings

import pytest

from training.config import ConfigError, TrainingConfig, load_config
from training.optim import LRSchedule, global_batch_size, learning_rate, samples_after_steps
from training.parallel.grid import destroy_grid
from training.trainer import Trainer

PEAK, FLOOR = 5.0e-5, 5.0e-6


def walk(cfg):
    """(step, tokens before, batch, lr) of every step, by the loop's own rules."""
    schedule = LRSchedule(cfg.optim, cfg.batch, cfg.train.steps, cfg.model.seq_len)
    consumed, seq = 0, cfg.model.seq_len
    for step in range(1, cfg.train.steps + 1):
        batch = global_batch_size(consumed, cfg.batch)
        yield step, consumed * seq, batch, schedule.lr(step, consumed + batch)
        consumed += batch


def test_mtnlg_config_follows_the_papers_schedule_at_its_landmarks():
    cfg = load_config("mtnlg_530b")
    o = cfg.optim
    assert (o.lr, o.min_lr, o.clip, o.weight_decay, o.beta1, o.beta2, o.eps) == \
        (PEAK, PEAK / 10, 1.0, 0.1, 0.9, 0.95, 1e-8)
    steps = list(walk(cfg))
    tokens_per_sample = 2048
    # batch: 32 at the start, growing by 32, reaching 1920 exactly when 12B tokens are consumed
    assert steps[0][2] == 32
    sizes = [s[2] for s in steps]
    assert sorted(set(sizes)) == list(range(32, 1921, 32))
    assert all(b - a in (0, 32) for a, b in zip(sizes, sizes[1:], strict=False))
    ramp = [s for s in steps if s[2] < 1920]
    full = [s for s in steps if s[2] == 1920]
    assert ramp[-1][1] < 12e9 <= full[0][1]
    assert full[0][1] - 12e9 < 1888 * tokens_per_sample  # within one step of the landmark
    # warmup: linear in tokens up to the peak at 1B tokens (not 16.6M tokens of batch-32 steps)
    for _, before, batch, lr in steps:
        after = before + batch * tokens_per_sample
        if after <= 1e9:
            assert lr == pytest.approx(PEAK * after / 1e9, rel=1e-12)
        else:
            break
    warm_end = next(s for s in steps if s[1] + s[2] * tokens_per_sample > 1e9)
    assert warm_end[3] == pytest.approx(PEAK, rel=1e-4)
    assert warm_end[0] > 254  # the old steps-based warmup ended at step 254, at 16.6M tokens
    # cosine: half-way between warmup and 340B tokens is the mean of peak and floor, and the
    # floor is reached at 340B tokens exactly
    schedule = LRSchedule(cfg.optim, cfg.batch, cfg.train.steps, 2048)
    assert learning_rate(170_500_000_000, o, schedule.run_length) == \
        pytest.approx((PEAK + FLOOR) / 2, rel=1e-9)
    assert learning_rate(340_000_000_000 - 2048, o, schedule.run_length) > FLOOR
    assert learning_rate(340_000_000_000, o, schedule.run_length) == FLOOR
    # the run: 270B tokens, ending on the cosine before its floor
    last = steps[-1]
    end_tokens = last[1] + last[2] * tokens_per_sample
    assert 270e9 <= end_tokens < 270e9 + 1920 * tokens_per_sample
    progress = (end_tokens - 1e9) / 339e9
    assert last[3] == pytest.approx(FLOOR + 0.5 * (1 + math.cos(math.pi * progress))
                                    * (PEAK - FLOOR), rel=1e-9)
    assert samples_after_steps(cfg.train.steps, cfg.batch) * 2048 == end_tokens


def test_rampup_with_a_step_schedule_is_an_error_naming_the_fix():
    with pytest.raises(ConfigError, match=r"optim\.schedule_unit is steps but batch\.rampup.*"
                                          r"set optim\.schedule_unit to samples or tokens"):
        load_config("tiny", ["batch.rampup=[4, 4, 64]"])
    cfg = load_config("tiny", ["batch.rampup=[4, 4, 64]", "optim.schedule_unit=samples",
                               "optim.warmup=32"])
    assert cfg.optim.schedule_unit == "samples"
    with pytest.raises(ConfigError, match=r"warmup \(50\) must not exceed decay \(40\)"):
        load_config("tiny", ["optim.warmup=50", "optim.decay=40"])


def test_decay_steps_still_works_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match="optim.decay_steps is deprecated"):
        cfg = load_config("tiny", ["optim.decay_steps=80"])
    assert cfg.optim.decay == 80 and "decay_steps" not in cfg.dump()["optim"]
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="give decay only"):
        warnings.simplefilter("ignore")
        load_config("tiny", ["optim.decay_steps=80", "optim.schedule_unit=tokens"])


def test_samples_and_tokens_units_agree_with_steps_at_a_fixed_batch():
    common = ["optim.lr=1.0", "optim.min_lr=0.1"]
    by_steps = load_config("tiny", [*common, "optim.warmup=10", "optim.decay=110"])
    by_samples = load_config("tiny", [*common, "optim.schedule_unit=samples",
                                      "optim.warmup=160", "optim.decay=1760"])
    by_tokens = load_config("tiny", [*common, "optim.schedule_unit=tokens",
                                     "optim.warmup=10240", "optim.decay=112640"])
    for step in (1, 5, 10, 11, 60, 110, 200):
        lrs = [LRSchedule(c.optim, c.batch, 100, c.model.seq_len).lr(step, 16 * step)
               for c in (by_steps, by_samples, by_tokens)]
        assert lrs[1] == pytest.approx(lrs[0]) and lrs[2] == pytest.approx(lrs[0])


def test_trainer_schedules_by_samples_through_the_rampup(tmp_path):
    """Ramp-up 4 -> 8: the LR follows the samples consumed, not the step count; decay's
    default end is the run's samples."""
    cfg = TrainingConfig.model_validate({
        "model": {"layers": 1, "hidden": 16, "heads": 2, "seq_len": 8, "vocab_size": 32,
                  "pad_vocab_to": 8},
        "batch": {"micro": 2, "global": 8, "rampup": [4, 2, 16]},
        "optim": {"lr": 1.0e-2, "min_lr": 1.0e-3, "schedule_unit": "samples", "warmup": 8},
        "train": {"steps": 6, "dir": str(tmp_path)}, "data": {"synthetic": True}})
    trainer = Trainer(cfg)
    records = trainer.run()
    trainer.close()
    destroy_grid()
    consumed = [r["consumed_samples"] for r in records]
    assert consumed == [4, 8, 14, 20, 28, 36]
    expected = [learning_rate(c, cfg.optim, 36) for c in consumed]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert records[1]["lr"] == pytest.approx(1.0e-2) and records[-1]["lr"] == pytest.approx(1e-3)
