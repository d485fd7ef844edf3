"""The curation fault scenarios: a Dask worker SIGKILLed mid-stage (scenario 1) and `curate
run` SIGKILLed mid-stage and run again (scenario 2), each compared with an undisturbed run.
Used by bench/faults.py and tests/test_faults_curation.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from bench.fault_processes import BIN, kill_group, popen_logged, wait_for

# to cover a per-partition stage, a global one (exact_dedup) and the tokenizer.
FAULT_STAGES = {
    "normalize": {},
    "heuristics": {"gopher_quality": {}, "gopher_repetition": {},
                   "c4": {"terminal_punctuation": None, "drop_curly_bracket": False,
                          "min_sentences": 3}},
    "exact_dedup": {},
}


@dataclass(frozen=True)
class KillPoint:
    """A moment to kill at: some `progress` files exist under OUT and `done` does not yet."""

    label: str
    progress: str  # a glob under OUT
    done: str  # a path under OUT


PER_PARTITION = KillPoint("heuristics (per-partition stage)", "stages/03_heuristics/stats/*.json",
                          "stages/03_heuristics/_manifest.json")
GLOBAL_PREPARE = KillPoint("exact_dedup prepare (hashing before the shuffle)",
                           "stages/05_exact_dedup/keys/*.parquet",
                           "stages/05_exact_dedup/decisions.done.json")
TOKENIZE = KillPoint("tokenize (encoding curated partitions)", "tokens/*/_parts-*/part-*.arrow",
                     "tokens/_manifest.json")
KILL_POINTS = {"heuristics": PER_PARTITION, "exact_dedup": GLOBAL_PREPARE, "tokenize": TOKENIZE}


def write_fault_corpus(root: Path, scale: float = 0.1, partition_rows: int = 8) -> Path:
    """The demo corpus at `scale` under root/demo_data and a reduced spec; returns the spec."""
    from curation.demo_corpus import build_demo_corpus

    build_demo_corpus(root / "demo_data", scale=scale)
    spec = {
        "name": "faults", "seed": 1234,
        "sources": [
            {"name": "pydocs", "paths": ["demo_data/pydocs/*.jsonl.zst"], "id_field": "id",
             "priority": 10},
            {"name": "docstrings", "paths": ["demo_data/docstrings/*.jsonl.gz"], "priority": 5},
            {"name": "web", "paths": ["demo_data/web/*.parquet"], "format": "parquet",
             "id_field": "id"},
        ],
        "read": {"partition_rows": partition_rows},
        "stages": FAULT_STAGES,
        "tokenizer": {"train": {"vocab_size": 512, "max_docs": 2000}, "shard_tokens": 20000},
    }
    path = root / "spec.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path


@dataclass
class LoopbackCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]


@contextmanager
def loopback_cluster(workdir: Path, workers: int = 2,
                     timeout: float = 90) -> Iterator[LoopbackCluster]:
    """`dask scheduler` + `dask worker --no-nanny` processes on 127.0.0.1; all killed on exit."""
    from dask.distributed import Client

    workdir.mkdir(parents=True, exist_ok=True)
    scheduler_file = workdir / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        scheduler = popen_logged([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                            "--port", "0", "--dashboard-address", "127.0.0.1:0",
                            "--scheduler-file", str(scheduler_file)],
                           workdir / "scheduler.log")
        procs.append(scheduler)

        def address():
            if scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited; see {workdir / 'scheduler.log'}")
            try:
                return json.loads(scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return None

        addr = wait_for(address, timeout, "the scheduler file")
        worker_procs = []
        for i in range(workers):
            worker_procs.append(popen_logged(
                [str(BIN / "dask"), "worker", addr, "--nthreads", "1", "--no-nanny",
                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                workdir / f"worker{i}.log"))
            procs.append(worker_procs[-1])
        with Client(addr, timeout=timeout) as client:
            client.wait_for_workers(workers, timeout=timeout)
        yield LoopbackCluster(addr, scheduler, worker_procs)
    finally:
        for proc in reversed(procs):
            kill_group(proc)


def start_curate(spec: Path, out: Path, log: Path, scheduler: str | None = None,
                 workers: int = 2) -> subprocess.Popen:
    where = ["--scheduler", scheduler] if scheduler else ["--workers", str(workers)]
    return popen_logged([str(BIN / "curate"), "run", str(spec), "--out", str(out), *where], log)


def run_curate(spec: Path, out: Path, log: Path, scheduler: str | None = None,
               timeout: float = 600) -> float:
    """Run `curate run` to the end; its seconds. Raises with the log tail on failure."""
    started = time.perf_counter()
    proc = start_curate(spec, out, log, scheduler)
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    if rc != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"curate run exited {rc}:\n{tail}")
    return time.perf_counter() - started


def wait_for_kill_point(out: Path, proc: subprocess.Popen, point: KillPoint,
                        timeout: float = 300) -> int:
    """Block until `point` is reached in `out`; how many progress files there were then."""
    def check():
        if (out / point.done).exists():
            raise RuntimeError(f"{point.label}: finished before it was caught half done")
        progress = len(list(out.glob(point.progress)))
        if progress:
            return progress
        if proc.poll() is not None:
            raise RuntimeError(f"curate run ended (rc {proc.returncode}) before {point.label}")
        return None

    return wait_for(check, timeout, point.label, poll=0.005)


def read_tables(folder: Path) -> pd.DataFrame:
    files = sorted(folder.rglob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class RunOutput:
    curated: pd.DataFrame
    ledger: pd.DataFrame
    shards: dict[str, str]  # path under OUT -> sha256 (token shards and the tokenizer)


def snapshot(out: Path) -> RunOutput:
    curated = read_tables(out / "curated").sort_values("id").reset_index(drop=True)
    ledger = read_tables(out / "ledger").sort_values(["stage", "id", "action"])
    shards = {str(p.relative_to(out)): _sha256(p)
              for p in sorted((out / "tokens").rglob("shard-*.arrow"))}
    shards["tokenizer.json"] = _sha256(out / "tokenizer.json")
    return RunOutput(curated, ledger.reset_index(drop=True), shards)


def differences(a: RunOutput, b: RunOutput) -> list[str]:
    """What differs between two runs' outputs (empty when identical)."""
    problems = []
    for name in ("curated", "ledger"):
        try:
            pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
        except AssertionError as exc:
            problems.append(f"{name}: {str(exc).splitlines()[0]}")
    if a.shards != b.shards:
        changed = sorted(set(a.shards.items()) ^ set(b.shards.items()))
        problems.append(f"token shards differ: {changed[:4]}")
    return problems


def worker_scenario(spec: Path, workdir: Path, point: KillPoint = PER_PARTITION) -> dict:
    """Scenario 1: SIGKILL one of two workers mid-stage; the run finishes on the other."""
    out = workdir / "out_worker_kill"
    log = workdir / "curate_worker_kill.log"
    with loopback_cluster(workdir / "cluster") as cluster:
        started = time.perf_counter()
        proc = start_curate(spec, out, log, scheduler=cluster.address)
        try:
            progress = wait_for_kill_point(out, proc, point)
            killed_at = time.perf_counter() - started
            victim = cluster.workers[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            rc = proc.wait(timeout=600)
        finally:
            kill_group(proc)
        seconds = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"curate run exited {rc} after the worker kill:\n"
                           f"{log.read_text(errors='replace')[-3000:]}")
    return {"out": out, "point": point, "progress_at_kill": progress,
            "killed_at_s": killed_at, "seconds": seconds}


def rerun_scenario(spec: Path, workdir: Path, point: KillPoint = PER_PARTITION) -> dict:
    """Scenario 2: SIGKILL `curate run` (driver and its workers) mid-stage, then rerun."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out_run_kill"
    log = workdir / "curate_run_kill.log"
    started = time.perf_counter()
    proc = start_curate(spec, out, log)
    try:
        progress = wait_for_kill_point(out, proc, point)
        killed_at = time.perf_counter() - started
    finally:
        kill_group(proc)
    finished = {path: path.stat().st_mtime_ns for path in out.glob(point.progress)}
    rerun = run_curate(spec, out, workdir / "curate_rerun.log")
    return {"out": out, "point": point, "progress_at_kill": progress,
            "finished_at_kill": finished, "killed_at_s": killed_at, "rerun_s": rerun,
            "log": workdir / "curate_rerun.log"}
