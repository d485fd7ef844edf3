"""Progress over Dask futures, so long stages show how far they are.

At a terminal, a tqdm bar. Anywhere else (a CI log, a Slurm output file, a notebook) a bar
is either invisible or a wall of carriage returns, so there a plain line is printed every
`TEXTMILL_PROGRESS_SECONDS` seconds (default 30) while parts finish, and one when the
stage is done: `heuristics: 12/40 parts, 31 s`.

A task may cover several parts (curation.batches); `parts` says how many each covers, and
progress is counted in parts. Away from a terminal the driver does no work per task while
it waits: it blocks on the futures and counts them only when a line is due.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

PROGRESS_SECONDS_ENV = "TEXTMILL_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0


def track(futures: Sequence, desc: str, parts: Sequence[int] | None = None) -> None:
    """Block until every future is done (finished or failed), showing progress on stderr;
    future k covers `parts[k]` parts (one each by default)."""
    parts = [1] * len(futures) if parts is None else list(parts)
    if sys.stderr.isatty():
        _bar(futures, desc, parts)
    else:
        _plain_lines(futures, desc, parts, _interval())


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS)))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


def _bar(futures: Sequence, desc: str, parts: list[int]) -> None:
    from dask.distributed import as_completed
    from tqdm import tqdm

    size = {f.key: n for f, n in zip(futures, parts, strict=True)}
    with tqdm(total=sum(parts), desc=desc, unit="part", file=sys.stderr, leave=True,
              dynamic_ncols=True) as bar:
        for future in as_completed(futures):
            bar.update(size[future.key])


def _plain_lines(futures: Sequence, desc: str, parts: list[int], every: float) -> None:
    from distributed import wait
    from distributed.client import TimeoutError

    started = time.monotonic()
    total = sum(parts)
    while True:
        try:
            wait(futures, timeout=max(every, 0.1))
            break
        except TimeoutError:
            done = sum(n for f, n in zip(futures, parts, strict=True) if f.done())
            _line(desc, done, total, time.monotonic() - started)
    _line(desc, total, total, time.monotonic() - started)


def _line(desc: str, done: int, total: int, seconds: float) -> None:
    print(f"{desc}: {done}/{total} parts, {seconds:.0f} s", file=sys.stderr, flush=True)
