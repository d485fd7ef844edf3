"""A blend whose source curation filtered away: `pretrain` skips it with one warning line and
the renormalised weights (also in metrics.jsonl's first line and TensorBoard), or with
`data.empty_sources: error` stops with one clear line before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.training.planted_out import write_planted_out, write_token_source
from training.cli import main as pretrain
from training.data import build_blended_dataset
from training.data.empty_sources import EmptySourceError


@pytest.fixture()
def out_with_a_filtered_source(tmp_path):
    """web and books have tokens; man_de was emptied by curation (a manifest of 0
    documents) and gone never reached tokens/ at all."""
    out = write_planted_out(tmp_path / "out", {"web": 0.5, "books": 0.3, "man_de": 0.1,
                                                "gone": 0.1})
    for name in ("man_de", "gone"):
        for path in (out / "tokens" / name).iterdir():
            path.unlink()
        (out / "tokens" / name).rmdir()
    write_token_source(out / "tokens", "man_de", [], vocab_size=96)
    return out


def pretrain_args(out, run_dir, *extra):
    return ["tiny", "--set", f"data.curated={out}", "--set", "model.seq_len=16",
            "--set", "train.steps=2", "--set", "train.eval_every=0",
            "--set", "train.save_every=0", "--set", f"train.dir={run_dir}", *extra]


def test_pretrain_skips_empty_sources_with_one_warning_line(out_with_a_filtered_source,
                                                             tmp_path, capfd):
    run_dir = tmp_path / "run"
    assert pretrain(pretrain_args(out_with_a_filtered_source, run_dir)) == 0
    err = capfd.readouterr().err
    warning = [line for line in err.splitlines() if "man_de" in line]
    assert warning == ["warning: data: skipping source(s) man_de, gone (no token shards); "
                       "blend renormalised: web 0.625, books 0.375"]
    assert "Traceback" not in err
    first = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["blend"] == pytest.approx({"web": 0.625, "books": 0.375})
    assert first["skipped_sources"] == ["man_de", "gone"]
    events = b"".join(p.read_bytes() for p in (run_dir / "tb").iterdir())
    assert b"skipped_sources" in events and b"man_de" in events


def test_empty_sources_error_is_one_line_before_any_work(out_with_a_filtered_source,
                                                         tmp_path, capfd):
    run_dir = tmp_path / "run"
    args = pretrain_args(out_with_a_filtered_source, run_dir, "--set",
                         "data.empty_sources=error")
    assert pretrain(args) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pretrain: ")
    assert "'man_de', 'gone'" in err and "data.empty_sources: skip" in err
    assert not run_dir.exists()


def test_a_blend_with_no_tokens_at_all_is_an_error_even_when_skipping(tmp_path):
    out = write_planted_out(tmp_path / "out", {"web": 1.0})
    write_token_source(out / "tokens", "web", [], vocab_size=96)  # emptied
    with pytest.raises(EmptySourceError, match=r"no source of the blend has token shards"):
        build_blended_dataset(out, 16, 0, {"train": 8}, empty_sources="skip")


def test_skipping_renormalises_the_blend_and_serves_only_the_others(out_with_a_filtered_source):
    train = build_blended_dataset(out_with_a_filtered_source, 16, 0, {"train": 400},
                                  empty_sources="skip")["train"]
    assert train.sources == ["web", "books"] and train.skipped_sources == ["man_de", "gone"]
    counts = np.bincount(train.blend_source, minlength=2)
    assert counts.tolist() == [250, 150]
