"""The `curate` sub-commands that wrap library calls: train-quality, export-megatron."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from curation.cli import main as curate


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_quality_trains_deterministically_and_reuses_finished_stages(demo_run, capsys):
    spec = demo_run.parent / "corpus_specs" / "demo.yaml"
    model = demo_run / "quality" / "model.bin"
    before = sha(model)
    heuristics = demo_run / "stages" / "03_heuristics" / "_manifest.json"
    stamp = heuristics.stat().st_mtime_ns
    assert curate(["train-quality", str(spec), "--out", str(demo_run), "--workers", "1",
                   "--force"]) == 0
    out = capsys.readouterr()
    assert "heuristics: finished earlier" in out.err
    assert json.loads(out.out[out.out.index("{\n") : out.out.rindex("}") + 1])["auc"] >= 0
    assert heuristics.stat().st_mtime_ns == stamp
    assert sha(model) == before  # retrained from the same sample: the same model


def test_train_quality_needs_a_quality_stage(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    spec.write_text("name: s\nsources: [{name: a, paths: [a.jsonl]}]\n")
    assert curate(["train-quality", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "no `stages.quality`" in capsys.readouterr().err


def test_export_megatron_writes_bin_and_idx(demo_run, tmp_path, capsys):
    prefix = tmp_path / "web"
    assert curate(["export-megatron", str(demo_run / "tokens" / "web"), str(prefix)]) == 0
    assert "web.bin" in capsys.readouterr().out
    manifest = json.loads((demo_run / "tokens" / "web" / "manifest.json").read_text())
    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)
    assert len(tokens) == manifest["tokens"]
    assert (tmp_path / "web.idx").read_bytes()[:9] == b"MMIDIDX\x00\x00"
