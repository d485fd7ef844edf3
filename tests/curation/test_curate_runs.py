"""`curate run` as a user meets it, with real processes: a locked OUT, Ctrl-C, reruns that
skip what is done, progress in a log file, and argument errors before any work."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from bench.curation_faults import (
    PER_PARTITION,
    differences,
    run_curate,
    snapshot,
    start_curate,
    wait_for_kill_point,
    write_fault_corpus,
)
from bench.fault_processes import BIN, kill_group, wait_for

STAGES = ("read", "normalize", "heuristics", "exact_dedup", "tokenize")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, write_fault_corpus(root, scale=0.1, partition_rows=8)


@pytest.fixture(scope="module")
def undisturbed(corpus):
    root, spec = corpus
    run_curate(spec, root / "reference", root / "reference.log")
    return snapshot(root / "reference")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_run_into_the_same_out_refuses_in_one_line(corpus, undisturbed, tmp_path):
    _, spec = corpus
    out = tmp_path / "out"
    first = start_curate(spec, out, tmp_path / "first.log")
    try:
        wait_for(lambda: (out / ".lock").exists() or first.poll() is not None, 120, "the lock")
        holder = json.loads((out / ".lock").read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        second = subprocess.run([str(BIN / "curate"), "run", str(spec), "--out", str(out),
                                 "--workers", "1"], capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second one tried"
        assert first.wait(timeout=600) == 0
    finally:
        kill_group(first)
    assert second.returncode == 2
    assert second.stderr.splitlines() == [
        f"curate run: error: {out} is in use by curate run (host {socket.gethostname()}, "
        f"pid {first.pid}, started {_started(holder)}); wait for it to finish, or delete "
        f"{out / '.lock'} if that run is gone"]
    assert differences(snapshot(out), undisturbed) == []
    assert not (out / ".lock").exists()


def _started(holder: dict) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))


def test_ctrl_c_stops_in_one_line_and_the_rerun_is_exact(corpus, undisturbed, tmp_path):
    _, spec = corpus
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    proc = start_curate(spec, out, log)
    try:
        wait_for_kill_point(out, proc, PER_PARTITION)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        rc = proc.wait(timeout=120)
    finally:
        kill_group(proc)
    text = log.read_text()
    assert rc == 130
    assert text.splitlines()[-1] == "curate run: interrupted; rerun the same command to resume"
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert not (out / ".lock").exists()
    assert not list(out.rglob("*.tmp")), "a half-written file was left"
    assert not (out / PER_PARTITION.done).exists()
    run_curate(spec, out, tmp_path / "rerun.log")
    rerun = (tmp_path / "rerun.log").read_text()
    assert "heuristics: rerun: unfinished: finishing the parts an earlier run did not" in rerun
    assert differences(snapshot(out), undisturbed) == []


def test_progress_is_a_plain_line_per_stage_in_a_log(corpus, undisturbed):
    root, _ = corpus
    log = (root / "reference.log").read_text()
    parts = len(list((root / "reference" / "stages" / "03_heuristics" / "data").glob("*.parquet")))
    assert f"heuristics: {parts}/{parts} parts, " in log
    assert "\r" not in log  # no progress bar redrawn into the file


def test_a_rebuilt_corpus_skips_every_stage_and_a_stale_lock_is_taken_over(corpus,
                                                                          undisturbed):
    root, spec = corpus
    out = root / "reference"
    rebuilt = subprocess.run([str(BIN / "curate"), "demo-corpus", str(root / "demo_data"),
                              "--scale", "0.1"], capture_output=True, text=True, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stderr
    # a file rewritten with the same bytes: only its mtime changes
    touched = sorted((root / "demo_data" / "web").glob("*.parquet"))[0]
    os.utime(touched, (touched.stat().st_atime, touched.stat().st_mtime + 100))
    dead = _dead_pid()
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead,
                                           "started": 0, "command": "curate run"}))
    run_curate(spec, out, root / "again.log")
    log = (root / "again.log").read_text()
    for stage in STAGES:
        assert f"{stage}: finished earlier with the same inputs; skipped" in log, stage
    assert "rerun:" not in log
    assert f"taking over the lock of curate run (host {socket.gethostname()}, pid {dead}" in log
    assert differences(snapshot(out), undisturbed) == []


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_positive_count(tmp_path, workers):
    done = subprocess.run([str(BIN / "curate"), "run", "spec.yaml", "--out", "out",
                           "--workers", workers], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"curate run: error: argument --workers: must be a whole number of at least 1, "
        f"got {workers!r}")
    assert not (tmp_path / "out").exists()
