"""`pretrain` fed by the blended loader over a real `curate run` output."""

from __future__ import annotations

import json
import math

from training.cli import main as pretrain
from training.data import build_blended_dataset


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_pretrain_trains_on_the_curated_blend_identically_at_tp1_and_tp2(demo_run, tmp_path):
    common = ["tiny", "--set", f"data.curated={demo_run}", "--set", "model.seq_len=32",
              "--set", "train.steps=6", "--set", "train.eval_every=3",
              "--set", "train.save_every=100"]
    assert pretrain([*common, "--set", f"train.dir={tmp_path / 'tp1'}"]) == 0
    assert pretrain([*common, "--tp", "2", "--set", f"train.dir={tmp_path / 'tp2'}"]) == 0
    one, two = records(tmp_path / "tp1"), records(tmp_path / "tp2")
    assert [r["step"] for r in one] == list(range(1, 7))
    assert [r["consumed_samples"] for r in one] == [16 * s for s in range(1, 7)]
    for a, b in zip(one, two, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5)
    # the model is sized by the tokenizer of the curated run, not by tiny's synthetic vocab
    vocab = build_blended_dataset(demo_run, 32, 1234, {"train": 96})["train"].vocab_size
    assert vocab > 512
    assert abs(one[0]["loss"] - math.log(vocab)) < 1.0
    val = [r["val_loss"] for r in one if "val_loss" in r]
    assert len(val) == 2 and val[1] < val[0]
