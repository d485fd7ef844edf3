"""One `pretrain` per `train.dir`, with real processes: a second run refuses in one line
naming the first; the ranks a bare `pretrain` starts do not trip over their launcher's
lock; a lock left by a killed run is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import time

from bench.fault_processes import BIN, kill_group, popen_logged, wait_for


def _pretrain(run_dir, steps: int, *extra: str) -> list[str]:
    return [str(BIN / "pretrain"), "tiny", "--set", f"train.dir={run_dir}",
            "--set", f"train.steps={steps}", "--set", "train.eval_every=100000",
            "--set", "train.save_every=100000", "--set", "model.seq_len=32", *extra]


def test_a_second_pretrain_into_the_same_dir_refuses_and_a_killed_ones_lock_is_taken(tmp_path):
    run_dir = tmp_path / "run"
    first = popen_logged(_pretrain(run_dir, 100000, "--tp", "2"), tmp_path / "first.log")
    try:
        # ranks started by the launcher are training: they did not refuse their own lock
        wait_for(lambda: first.poll() is not None or (run_dir / "metrics.jsonl").exists()
                 and (run_dir / "metrics.jsonl").read_text().count("\n") >= 1, 300,
                 "the first run's metrics")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        holder = json.loads((run_dir / ".lock").read_text())
        second = subprocess.run(_pretrain(run_dir, 2), capture_output=True, text=True,
                                timeout=300)
        assert first.poll() is None
    finally:
        kill_group(first)  # SIGKILL: the lock file stays behind
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"]))
    assert second.returncode == 2
    assert second.stderr.splitlines() == [
        f"pretrain: {run_dir} is in use by pretrain (host {socket.gethostname()}, pid "
        f"{first.pid}, started {started}); wait for it to finish, or delete "
        f"{run_dir / '.lock'} if that run is gone"]
    assert (run_dir / ".lock").exists()
    third = subprocess.run(_pretrain(run_dir, 2), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"taking over the lock of pretrain (host {socket.gethostname()}, pid {first.pid}" \
        in third.stderr
    assert not (run_dir / ".lock").exists()
