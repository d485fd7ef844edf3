"""What `pretrain` tells its user: a wrong data.curated in one line before any process
starts, a rank's failure as its root cause's one line, config typos with the valid keys and
the flag that caused them, Ctrl-C, nothing to do, a changed LR schedule, the end-of-run
summary and the layout line. Processes are real where the behaviour is about processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from training import cli
from training.cli import main as pretrain
from training.config import load_config, parse_config
from training.optim import learning_rate
from training.preflight import PreflightError, check_curated
from training.rank_failures import root_cause
from training.run_messages import layout_line

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN = [sys.executable, "-m", "training.cli"]


def run_cli(args, tmp_path, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*PRETRAIN, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                **(env or {})})


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def write_out(out: Path, sources: dict[str, int | None], tokenizer=True, blend=None) -> Path:
    """A curate OUT as the preflight sees it: a frozen spec and per source a manifest with
    that many tokens (None: no manifest at all)."""
    blend = blend or {name: {"weight": 1.0} for name in sources}
    spec = {"name": "t", "sources": [{"name": n, "paths": ["x"], **blend[n]} for n in sources]}
    if tokenizer:
        spec["tokenizer"] = {"train": {"vocab_size": 512}}
    out.mkdir(parents=True)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec))
    for name, tokens in sources.items():
        if tokens is None:
            continue
        (out / "tokens" / name).mkdir(parents=True)
        shards = [{"file": "shard-00000.arrow", "documents": 1, "tokens": tokens}] if tokens \
            else []
        (out / "tokens" / name / "manifest.json").write_text(json.dumps(
            {"dtype": "uint16", "eod_id": 0, "vocab_size": 512, "shards": shards}))
    return out


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if `pretrain` starts ranks or trains."""
    def refuse(*args, **kwargs):
        raise AssertionError("ranks were started")
    monkeypatch.setattr(cli, "launch_reporting", refuse)
    monkeypatch.setattr(cli, "run_reporting", refuse)


@pytest.mark.parametrize("make,expected", [
    (lambda t: t / "missing", r"data.curated=\S+missing: no such folder; make it with "
                              r"`curate run SPEC --out \S+missing`"),
    (lambda t: (t / "demo_data" / "web").mkdir(parents=True) or t / "demo_data",
     r"demo_data is not a `curate run` output \(no spec.yaml\): run `curate run SPEC --out "
     r"OUT` and pass --set data.curated=OUT"),
    (lambda t: (write_out(t / "out", {"web": 10}) / "curated").mkdir() or t / "out" / "curated",
     r"out/curated is inside the `curate run` output \S+/out: use --set data.curated=\S+/out$"),
    (lambda t: write_out(t / "out", {"web": None}, tokenizer=False),
     r"has no token shards: its spec has no `tokenizer:`; add `tokenizer: "),
    (lambda t: write_out(t / "out", {"web": None}),
     r"has no token shards yet \(no tokens/\*/manifest.json\): finish it with `curate run SPEC"),
    (lambda t: write_out(t / "out", {"web": 0, "wiki": 0}),
     r"every source's token shards are empty"),
    (lambda t: write_out(t / "out", {"web": 5, "wiki": 5},
                         blend={"web": {"weight": 1.0}, "wiki": {"epochs": 2.0}}),
     r"the spec's blend cannot be used: .*give every source a weight, or use epochs"),
])
def test_a_wrong_data_curated_is_one_line_before_any_rank_starts(make, expected, tmp_path,
                                                                 capsys, no_launch):
    curated = make(tmp_path)
    assert pretrain(["tiny", "--dp", "2", "--set", f"data.curated={curated}",
                     "--set", f"train.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("pretrain: ")
    assert re.search(expected, err.strip()), err
    assert not (tmp_path / "run").exists()


def test_a_source_curation_emptied_is_left_to_the_loader(tmp_path):
    check_curated(write_out(tmp_path / "a", {"web": 10, "wiki": None}))
    check_curated(write_out(tmp_path / "b", {"web": 10, "wiki": 0}))
    with pytest.raises(PreflightError):
        check_curated(write_out(tmp_path / "c", {"web": None, "wiki": None}))


def test_config_typos_list_the_valid_keys_and_name_the_flag(tmp_path, capsys, no_launch):
    assert pretrain(["tiny", "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("pretrain: --set optim.lrr=1: unknown key optim.lrr (allowed: beta1, "
                           "beta2, clip, decay, eps, lr, min_lr, peak_tflops, schedule_unit, "
                           "warmup, weight_decay)")
    assert pretrain(["tiny", "--tp", "3"]) == 2
    assert capsys.readouterr().err.startswith(
        "pretrain: --tp 3: model.heads (4) must be divisible by parallel.tp (3)")
    config = tmp_path / "mine.yaml"
    raw = yaml.safe_load((ROOT / "training" / "configs" / "tiny.yaml").read_text())
    raw["batch"]["globl"] = 16
    config.write_text(yaml.safe_dump(raw))
    assert pretrain([str(config), "--set", "train.steps=0"]) == 2
    err = capsys.readouterr().err
    assert f"invalid training config {config}:" in err
    assert "  batch.globl: unknown key (allowed: global, micro, rampup)" in err
    assert "  --set train.steps=0: train.steps: Input should be greater than 0" in err
    # the flag is named however the key is nested, and an unknown section lists the sections
    with pytest.raises(Exception, match=r"--set optimm.lr=1: unknown key optimm \(allowed: "
                                        r"batch, data, device, dtype, finetune, model, optim, "
                                        r"parallel"):
        load_config("tiny", ["optimm.lr=1"])


def test_help_lists_the_sub_commands(tmp_path):
    result = run_cli(["--help"], tmp_path)
    assert result.returncode == 0
    assert "pretrain export-hf" in result.stdout


def test_a_failing_rank_is_its_root_cause_in_one_line(tmp_path):
    """Real ranks: a checkpoint of another model shape fails every rank's resume."""
    common = ["tiny", "--set", "train.steps=2", "--set", f"train.dir={tmp_path / 'run'}"]
    assert run_cli(common, tmp_path).returncode == 0
    failed = run_cli([*common, "--dp", "2", "--set", "model.heads=2"], tmp_path)
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1, failed.stderr
    assert lines[0].startswith("pretrain: rank ")
    assert "saved by a model of another shape; model.heads: 4 in the checkpoint, 2 in this " \
           "config" in lines[0]
    debug = run_cli([*common, "--dp", "2", "--set", "model.heads=2"], tmp_path,
                    env={"TEXTMILL_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert "check_resume" in debug.stderr


def test_the_root_cause_is_the_first_primary_failure_not_a_peers_reaction():
    records = [
        {"rank": 0, "time": 1.0, "type": "IndexBuildError", "message": "rank 0 failed ..."},
        {"rank": 3, "time": 2.0, "type": "RuntimeError",
         "message": "RuntimeError: [gloo] Connection closed by peer [127.0.0.1]:1234"},
        {"rank": 2, "time": 3.0, "type": "ShardError", "message": "shard-00001.arrow: bad"},
        {"rank": 1, "time": 4.0, "type": "ValueError", "message": "later"},
    ]
    assert root_cause(records, None) == "rank 2: shard-00001.arrow: bad"
    assert root_cause(records[:2], None) == "rank 0: rank 0 failed ..."
    assert root_cause([{"rank": 0, "time": 1.0, "interrupted": True}], None) is None


def test_ctrl_c_is_one_line_and_resume_stays_exact(tmp_path):
    """SIGINT to the process group, as a terminal's Ctrl-C: the launcher and both ranks."""
    run = tmp_path / "run"
    args = ["tiny", "--dp", "2", "--set", "train.save_every=3", "--set", f"train.dir={run}"]
    proc = subprocess.Popen([*PRETRAIN, *args, "--set", "train.steps=100000"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
            (run / "metrics.jsonl").is_file() and len(records(run)) >= 7):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "pretrain: interrupted; rerun the same command to resume"
    assert not list((run / "checkpoints").glob(".tmp-*"))
    # The same command resumes; its losses are an uninterrupted run's.
    resumed_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*"))
    steps = resumed_at + 3
    resumed = run_cli([*args, "--set", f"train.steps={steps}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run}/checkpoints/step-{resumed_at:08d}" in resumed.stdout
    reference = tmp_path / "reference"
    assert run_cli([*args, "--set", f"train.steps={steps}",
                    "--set", f"train.dir={reference}"], tmp_path).returncode == 0
    expected = {r["step"]: r["loss"] for r in records(reference)}
    tail = records(run)[-3:]
    assert [r["step"] for r in tail] == list(range(resumed_at + 1, steps + 1))
    assert [r["loss"] for r in tail] == [expected[r["step"]] for r in tail]


def test_summary_nothing_to_do_and_a_stretched_schedule(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["tiny", "--set", "optim.warmup=0", "--set", "train.eval_every=2",
              "--set", "train.save_every=100", "--set", f"train.dir={run}"]
    assert pretrain([*common, "--set", "train.steps=4"]) == 0
    out = capsys.readouterr().out
    final = records(run)[-1]
    assert "trained steps 1-4 of 4 in " in out
    assert f"final loss {final['loss']:.4f}, val_loss {final['val_loss']:.4f} (step 4)" in out
    assert f"  checkpoint   {run}/checkpoints/step-00000004" in out
    assert f"  metrics      {run}/metrics.jsonl" in out
    assert re.search(rf"  tensorboard  \S*tensorboard --logdir {run}/tb", out)

    assert pretrain([*common, "--set", "train.steps=4"]) == 0
    out = capsys.readouterr().out
    assert "already at step 4 ≥ train.steps (4): nothing to do" in out
    assert "trained steps" not in out and len(records(run)) == 4

    assert pretrain([*common, "--set", "train.steps=8"]) == 0
    out = capsys.readouterr().out
    optim = load_config("tiny", ["optim.warmup=0"]).optim
    old, new = learning_rate(5, optim, 4), learning_rate(5, optim, 8)
    assert (f"LR schedule changed since the checkpoint (train.steps 4 -> 8): step 5 gets LR "
            f"{new:.4g} instead of {old:.4g}") in out
    assert "trained steps 5-8 of 8" in out


def test_the_layout_line_counts_every_dimension():
    def parallel(**kw):
        return load_config("tiny", [f"parallel.{k}={v}" for k, v in kw.items()]
                           + ["model.layers=4", "batch.global=32"]).parallel
    assert layout_line(parallel(tp=2, pp=2), 2) == "2 stages × TP 2 over 4 ranks"
    assert layout_line(parallel(pp=2, dp=2), 2) == "2 stages × DP 2 over 4 ranks"
    assert layout_line(parallel(pp=2), 2) == "2 stages over 2 ranks"
    assert layout_line(parallel(tp=2, pp=2, dp=2, virtual_stages=2, schedule="interleaved"),
                       4) == "4 stages (2 per pipeline rank) × TP 2 × DP 2 over 8 ranks"


def test_the_readme_config_block_is_tiny_yaml():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml", readme.index("The config: `training/configs/tiny.yaml`"))
    block = readme[start + len("```yaml"): readme.index("```", start + 7)]
    assert parse_config(yaml.safe_load(block)).dump() == load_config("tiny").dump()
