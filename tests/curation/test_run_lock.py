"""FolderLock's records that no flock backs (a filesystem that does not share flocks, a
holder on another host): respected while they may be alive, taken over when dead here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from curation.run_lock import FolderLock, LockHeld


def _record(folder, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"command": "curate run", "started": 0, **fields}))


def test_a_record_from_another_host_is_respected(tmp_path):
    _record(tmp_path, host="elsewhere", pid=os.getpid())
    with pytest.raises(LockHeld, match=r"in use by curate run \(host elsewhere, pid \d+, "
                                       r"started .*\); wait for it to finish, or delete "):
        FolderLock(tmp_path, "curate run").acquire()


def test_a_live_pid_on_this_host_is_respected_and_a_dead_one_taken_over(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _record(tmp_path, host=socket.gethostname(), pid=sleeper.pid)
        with pytest.raises(LockHeld, match=f"pid {sleeper.pid}"):
            FolderLock(tmp_path, "curate run").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with FolderLock(tmp_path, "pretrain"):
        held = json.loads((tmp_path / ".lock").read_text())
        assert (held["host"], held["pid"], held["command"]) == \
            (socket.gethostname(), os.getpid(), "pretrain")
    assert f"taking over the lock of curate run (host {socket.gethostname()}, pid " \
           f"{sleeper.pid}" in capsys.readouterr().err
    assert not (tmp_path / ".lock").exists()
