"""Fault recovery of `curate run` (a killed Dask worker, a killed run that is rerun) and of
`pretrain` under torchrun (a killed rank).

Scenario 1 (`worker`): a `dask scheduler` and two `dask worker --no-nanny` processes on
loopback; one worker is SIGKILLed while a stage is half done (some partition stats
written, no manifest yet). The run must finish on the surviving worker.
Scenario 2 (`run`): `curate run` (its whole process group: driver and LocalCluster
workers) is SIGKILLed mid-stage, then run again on the same OUT.

Each is compared with an undisturbed run of the same spec: curated documents and ledger
as sorted tables, token shards and the tokenizer by sha256. The tests in
tests/test_faults_curation.py use the same helpers.
Scenario 3 (`rank`): `torchrun --standalone --nproc-per-node 2 --max-restarts 1` trains the
tiny config at DP 2; rank 1's worker is SIGKILLed mid-run; torchrun restarts the group, which
resumes from the latest checkpoint. Compared with an undisturbed torchrun job: the final
logged loss of every step (tests/test_faults_training.py checks the same).

    .venv/bin/python bench/faults.py [--scale 0.1] [--partition-rows 8] [--workdir DIR]
                                     [--scenarios 1,2,3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"
# The stages a fault run uses: cheap ones (no classifier training, no MinHash), enough
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


def kill_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGKILL a process started with start_new_session=True and all its children."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:  # children that outlived the leader (same group id)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _popen(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    handle = open(log, "ab")
    try:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    finally:
        handle.close()


@dataclass
class LoopbackCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]


def _wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


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
        scheduler = _popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
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

        addr = _wait_for(address, timeout, "the scheduler file")
        worker_procs = []
        for i in range(workers):
            worker_procs.append(_popen(
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
    return _popen([str(BIN / "curate"), "run", str(spec), "--out", str(out), *where], log)


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

    return _wait_for(check, timeout, point.label, poll=0.005)


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


TRAIN_STEPS, TRAIN_SAVE_EVERY, TRAIN_KILL_AFTER = 120, 20, 50


def start_torchrun(run_dir: Path, log: Path) -> subprocess.Popen:
    return _popen([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
                   "--max-restarts", "1", "-m", "training.cli", "tiny", "--dp", "2",
                   "--set", f"train.steps={TRAIN_STEPS}",
                   "--set", f"train.save_every={TRAIN_SAVE_EVERY}",
                   "--set", "train.eval_every=0", "--set", f"train.dir={run_dir}"], log, cwd=ROOT)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (which it starts in sessions of their own)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    kill_group(proc)
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def final_losses(run_dir: Path) -> dict[int, float]:
    """Loss per step; steps run again after a restart count by their last record."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("}")), default=0)


def _first_attempt_worker(proc: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("RANK") == str(rank) and env.get("TORCHELASTIC_RESTART_COUNT") == "0":
            return child
    return None


def rank_scenario(workdir: Path, kill: bool, timeout: float = 600) -> dict:
    """One torchrun job; with `kill`, rank 1 is SIGKILLed once TRAIN_KILL_AFTER steps are
    logged. Times: the kill, the restarted group's resume line, the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir, log = workdir / "run", workdir / "torchrun.log"
    started = time.perf_counter()
    proc = start_torchrun(run_dir, log)
    killed_at = resumed_at = None
    try:
        if kill:
            _wait_for(lambda: _logged_step(run_dir) >= TRAIN_KILL_AFTER or proc.poll() is not None,
                      timeout, f"step {TRAIN_KILL_AFTER}", poll=0.02)
            victim = _first_attempt_worker(proc, rank=1)
            if victim is None:
                raise RuntimeError(f"no rank-1 worker to kill (exit {proc.poll()}); see {log}")
            victim.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - started
            _wait_for(lambda: "resumed from" in log.read_text(errors="replace")
                      or proc.poll() is not None, timeout, "the restarted group to resume")
            resumed_at = time.perf_counter() - started
        rc = proc.wait(timeout=timeout)
    except (TimeoutError, subprocess.TimeoutExpired) as err:
        rc = f"none: {err}"
    finally:
        kill_tree(proc)
    if rc != 0 and not kill:
        raise RuntimeError(f"torchrun exited {rc}:\n{log.read_text(errors='replace')[-3000:]}")
    resumed = [line for line in log.read_text().splitlines() if line.startswith("resumed from")]
    return {"run_dir": run_dir, "seconds": time.perf_counter() - started, "rc": rc,
            "killed_at_s": killed_at, "resumed_at_s": resumed_at, "resumed": resumed}


def _same(reference: RunOutput, out: Path) -> str:
    problems = differences(reference, snapshot(out))
    return "yes" if not problems else "**NO**: " + "; ".join(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--partition-rows", type=int, default=8)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--scenarios", default="1,2,3", help="comma-separated subset of 1,2,3")
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    rows = training_rows(workdir) if "3" in scenarios else []
    if scenarios & {"1", "2"}:
        rows = curation_rows(workdir, args, scenarios) + rows
    print("\n| scenario | killed at (s) | recovery (s) | total (s) | total vs undisturbed "
          "| identical |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, killed, recovery, total, ratio, same in rows:
        print(f"| {name} | {killed} | {recovery:.1f} | {total:.1f} | {ratio:.2f}x | {same} |")
    print("\nrecovery: scenarios 1 and 3, from the kill to the end of the same run; scenario 2, "
          "the rerun.\ntotal: start of the first run to the end of the result (scenario 1 vs the "
          "undisturbed\ncluster run, 2 vs the undisturbed LocalCluster run, 3 vs the undisturbed "
          "torchrun job).")
    return 0


def training_rows(workdir: Path) -> list[tuple]:
    reference = rank_scenario(workdir / "train_reference", kill=False)
    rows = [("undisturbed torchrun job (tiny, DP 2)", "-", reference["seconds"],
             reference["seconds"], 1.0, "reference")]
    three = rank_scenario(workdir / "train_rank_kill", kill=True, timeout=120)
    expected, got = final_losses(reference["run_dir"]), final_losses(three["run_dir"])
    differing = [step for step in expected if got.get(step) != expected[step]]
    same = "yes" if not differing and got.keys() == expected.keys() else (
        f"**NO**: {len(differing)} steps differ or missing, first {differing[:3]}")
    if three["rc"] != 0:
        same = f"**NO**: the restarted job failed (exit {three['rc']}; see the torchrun.log)"
    if three["resumed"]:
        print(f"scenario 3: killed at {three['killed_at_s']:.1f} s; the restarted group "
              f"{three['resumed'][-1]} {three['resumed_at_s'] - three['killed_at_s']:.1f} s "
              "after the kill", flush=True)
    rows.append((f"3: rank 1 of 2 SIGKILLed after step {TRAIN_KILL_AFTER} (checkpoints every "
                 f"{TRAIN_SAVE_EVERY}), torchrun --max-restarts 1",
                 f"{three['killed_at_s']:.1f}", three["seconds"] - three["killed_at_s"],
                 three["seconds"], three["seconds"] / reference["seconds"], same))
    print(rows[-1], flush=True)
    return rows


def curation_rows(workdir: Path, args, scenarios: set[str]) -> list[tuple]:
    spec = write_fault_corpus(workdir, args.scale, args.partition_rows)
    print(f"workdir {workdir}; demo corpus scale {args.scale}, "
          f"partition_rows {args.partition_rows}", flush=True)

    with loopback_cluster(workdir / "ref_cluster") as cluster:
        ref_cluster_s = run_curate(spec, workdir / "ref_cluster_out", workdir / "ref1.log",
                                   scheduler=cluster.address)
    ref_local_s = run_curate(spec, workdir / "ref_local_out", workdir / "ref2.log")
    reference = snapshot(workdir / "ref_local_out")
    rows = [("undisturbed, `dask scheduler` + 2 `dask worker`", "-", ref_cluster_s,
             ref_cluster_s, 1.0, _same(reference, workdir / "ref_cluster_out")),
            ("undisturbed, LocalCluster of 2 workers", "-", ref_local_s, ref_local_s, 1.0,
             "reference")]
    for name in ("heuristics", "exact_dedup") if "1" in scenarios else ():
        one = worker_scenario(spec, workdir / f"worker_{name}", KILL_POINTS[name])
        rows.append((f"1: one of 2 workers SIGKILLed in {one['point'].label}",
                     f"{one['killed_at_s']:.1f}", one["seconds"] - one["killed_at_s"],
                     one["seconds"], one["seconds"] / ref_cluster_s,
                     _same(reference, one["out"])))
        print(rows[-1], flush=True)
    for name, point in KILL_POINTS.items() if "2" in scenarios else ():
        two = rerun_scenario(spec, workdir / f"run_{name}", point)
        rows.append((f"2: `curate run` SIGKILLed in {point.label}, then rerun",
                     f"{two['killed_at_s']:.1f}", two["rerun_s"],
                     two["killed_at_s"] + two["rerun_s"],
                     (two["killed_at_s"] + two["rerun_s"]) / ref_local_s,
                     _same(reference, two["out"])))
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
