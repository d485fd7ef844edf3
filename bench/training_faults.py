"""The training fault scenario: one rank of a `torchrun --max-restarts 1` job SIGKILLed
mid-run (scenario 3), compared with an undisturbed job. Used by bench/faults.py and
tests/test_faults_training.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import psutil

from bench.fault_processes import BIN, ROOT, kill_group, popen_logged, wait_for

TRAIN_STEPS, TRAIN_SAVE_EVERY, TRAIN_KILL_AFTER = 120, 20, 50


def start_torchrun(run_dir: Path, log: Path) -> subprocess.Popen:
    return popen_logged([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
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
            wait_for(lambda: _logged_step(run_dir) >= TRAIN_KILL_AFTER or proc.poll() is not None,
                      timeout, f"step {TRAIN_KILL_AFTER}", poll=0.02)
            victim = _first_attempt_worker(proc, rank=1)
            if victim is None:
                raise RuntimeError(f"no rank-1 worker to kill (exit {proc.poll()}); see {log}")
            victim.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - started
            wait_for(lambda: "resumed from" in log.read_text(errors="replace")
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
