"""Starting, watching and killing the processes of the fault scenarios (bench/faults.py and
the fault tests): each in a session of its own, its output in a log file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".venv" / "bin"


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


def popen_logged(args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    handle = open(log, "ab")
    try:
        return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                start_new_session=True)
    finally:
        handle.close()


def wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
