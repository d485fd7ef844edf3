"""An exclusive lock on an output folder, so two runs never write into the same one.

The lock is `FOLDER/.lock`: a JSON record of the holder (host, pid, start time, command)
and, while the holder lives, a kernel `flock` on that file. The kernel drops the flock when
the holder dies however it dies (SIGKILL included), so a lock left by a dead run on this
host is taken over without a word from the user. The record names the holder in the
refusal, and covers filesystems where `flock` is not shared: a record naming a live pid on
this host, or any other host, is respected even when the flock is granted. A record from
another host cannot be checked from here; the refusal says which file to delete if that
run is gone.

Nothing here knows about curation or training: `curate run` locks OUT, `pretrain` locks
`train.dir`. A folder on object storage (an fsspec URL) cannot hold a flock: it is not
locked, and a one-line note says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from curation.storage import is_remote, out_path

LOCK_NAME = ".lock"


class LockHeld(RuntimeError):
    """Another live run holds the folder; the message names it in one line."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return (f"{holder.get('command') or 'a run'} (host {holder.get('host', '?')}, "
            f"pid {holder.get('pid', '?')}, started {when})")


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _refusal(folder: Path, holder: dict) -> LockHeld:
    return LockHeld(f"{folder} is in use by {_describe(holder)}; wait for it to finish, or "
                    f"delete {folder / LOCK_NAME} if that run is gone")


def _acquire(folder: Path, command: str) -> tuple[int, Path]:
    path = folder / LOCK_NAME
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _refusal(folder, holder) from None
        # The previous holder may have unlinked the file between our open and our flock:
        # then we hold a lock on a file nobody else can see; start again.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        holder = _read_holder(fd)
        pid = holder.get("pid")
        other_live = isinstance(pid, int) and (
            holder.get("host") != host or (pid != os.getpid() and _pid_alive(pid)))
        if holder and other_live:
            os.close(fd)
            raise _refusal(folder, holder)
        if holder:
            print(f"{folder}: taking over the lock of {_describe(holder)}, which is no "
                  "longer running", file=sys.stderr)
        record = {"host": host, "pid": os.getpid(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        os.fsync(fd)
        return fd, path


class FolderLock:
    """Hold FOLDER/.lock: `with FolderLock(folder, "curate run"):`, or `acquire()` early
    (to refuse before other work) and `with` the held lock later.

    The folder is created if needed. `acquire` raises LockHeld (one line) when a live run
    holds it. On release the record is removed before the flock is dropped, so the next
    run finds no holder to report.
    """

    def __init__(self, folder: str | Path, command: str):
        self.folder = out_path(folder)
        self.command = command
        self._fd: int | None = None
        self._path: Path | None = None
        self._noted = False  # the no-lock note for a URL folder, said once

    def acquire(self) -> FolderLock:
        if is_remote(self.folder):
            if self._noted:
                return self
            self._noted = True
            print(f"{self.folder}: not locked (object storage has no file locks); make sure "
                  "no other run writes there", file=sys.stderr)
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fd, self._path = _acquire(self.folder, self.command)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self._path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FolderLock:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
