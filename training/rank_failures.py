"""What a user sees when a rank fails or the run is interrupted: the root cause's one message
with its rank, instead of torch's elastic-agent traceback (`--debug` or TEXTMILL_DEBUG=1
shows everything).

Each rank runs under `guarded`, which writes what stopped it (exception type, message,
traceback, wall time) to a folder the launching process made. When the launch fails, the
root cause is the earliest *primary* failure: a rank's own error, not a peer's reaction to
it (a closed gloo connection, a wait for rank 0's indices that rank 0 will never build).
torch's own error files carry second-resolution timestamps, too coarse to order ranks that
fail within the same second, hence this record.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

DEBUG_ENV = "TEXTMILL_DEBUG"
INTERRUPTED_EXIT = 130
# A peer's failure as seen from another rank: never the root cause while a primary exists.
SECONDARY_TYPES = {"IndexBuildError", "DistBackendError", "DistNetworkError"}
SECONDARY_TEXTS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                   "Connection refused", "failed to recv", "failed to send")
TORCH_LOGGERS = ("torch.distributed.elastic", "torch.multiprocessing", "torch.distributed")


class RankFailure(Exception):
    """A rank (or the only process) failed; str() is the one line to print."""


class Interrupted(Exception):
    """The run was stopped by Ctrl-C or a termination signal."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def describe_exception(err: BaseException) -> str:
    """textmill's own errors are written for users: their message alone; anything else keeps
    its type and points at --debug."""
    module = type(err).__module__ or ""
    if module.startswith(("training.", "curation.")):
        return str(err)
    return f"{type(err).__name__}: {err} (--debug for the traceback)"


def guarded(error_dir: str, entrypoint: Callable, *args):
    """A rank's entry point: run `entrypoint(*args)`, recording what stopped it, if anything."""
    try:
        return entrypoint(*args)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher's own SIGINT follows
        _record(error_dir, {"interrupted": True})
        raise SystemExit(INTERRUPTED_EXIT) from None
    except SystemExit:
        raise
    except BaseException as err:
        _record(error_dir, {"type": type(err).__name__, "message": describe_exception(err),
                            "traceback": traceback.format_exc()})
        raise


def _record(error_dir: str, record: dict) -> None:
    rank = int(os.environ.get("RANK", "0"))
    path = Path(error_dir) / f"rank-{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "time": time.time(), **record}), encoding="utf-8")
    os.replace(tmp, path)


def _is_secondary(record: dict) -> bool:
    return record.get("type") in SECONDARY_TYPES or any(
        text in record.get("message", "") for text in SECONDARY_TEXTS)


def root_cause(records: list[dict], failure: ChildFailedError | None) -> str | None:
    """The message to show, or None when the ranks were interrupted."""
    errors = sorted((r for r in records if not r.get("interrupted")), key=lambda r: r["time"])
    primary = [r for r in errors if not _is_secondary(r)]
    if primary:
        return _format(primary[0])
    killed = _killed_by_signal(failure)
    if killed:
        return killed
    if errors:
        return _format(errors[0])
    if any(r.get("interrupted") for r in records):
        return None
    if failure is not None:
        rank, process = failure.get_first_failure()
        return (f"rank {rank} exited with code {process.exitcode} and no message "
                "(--debug for torch's logs)")
    return "a rank failed without a message"


def _format(record: dict) -> str:
    if debug_enabled():
        return f"rank {record['rank']}: {record['traceback'].rstrip()}"
    return f"rank {record['rank']}: {record['message']}"


def _killed_by_signal(failure: ChildFailedError | None) -> str | None:
    """A rank killed from outside (the OOM killer's SIGKILL) leaves no record of its own."""
    if failure is None:
        return None
    for rank, process in sorted(failure.failures.items()):
        if process.exitcode < 0 and -process.exitcode not in (signal.SIGTERM, signal.SIGINT):
            return (f"rank {rank} was killed by signal {process.signal_name()} "
                    "(out of memory? see `dmesg`)")
    return None


@contextmanager
def _quiet_torch_logs():
    """torch's elastic agent logs each failure and shutdown with tracebacks; its loggers set
    their own levels, so each one (all exist once the launcher is imported) is raised while
    the ranks run, and put back after."""
    if debug_enabled():
        yield
        return
    loggers = [logging.getLogger(name) for name in
               dict.fromkeys([*TORCH_LOGGERS, *logging.root.manager.loggerDict])
               if name.startswith(TORCH_LOGGERS)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def launch_reporting(launch: Callable, nproc: int, entrypoint: Callable, *args):
    """`launch(nproc, entrypoint, *args)` with failures raised as RankFailure (the root
    cause's message) and signals as Interrupted."""
    with _quiet_torch_logs(), tempfile.TemporaryDirectory(prefix="textmill-ranks-") as error_dir:
        try:
            return launch(nproc, guarded, error_dir, entrypoint, *args)
        except ChildFailedError as err:
            message = root_cause(_read(error_dir), err)
            if message is None:
                raise Interrupted() from None
            raise RankFailure(message) from None
        except (SignalException, KeyboardInterrupt):
            raise Interrupted() from None


def _read(error_dir: str) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(Path(error_dir).glob("rank-*.json"))]


def run_reporting(entrypoint: Callable, *args):
    """`entrypoint(*args)` in this process (a world of one, or one rank under torchrun), with
    the same messages as `launch_reporting`; --debug re-raises with the traceback."""
    try:
        return entrypoint(*args)
    except KeyboardInterrupt:
        raise Interrupted() from None
    except Exception as err:
        if debug_enabled():
            raise
        rank = os.environ.get("RANK")
        prefix = f"rank {rank}: " if rank is not None and os.environ.get("WORLD_SIZE") != "1" \
            else ""
        raise RankFailure(prefix + describe_exception(err)) from err
