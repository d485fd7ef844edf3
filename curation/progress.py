"""Progress over Dask futures, so long stages show how far they are.

At a terminal, a tqdm bar. Anywhere else (a CI log, a Slurm output file, a notebook) a bar
is either invisible or a wall of carriage returns, so there a plain line is printed every
`TEXTMILL_PROGRESS_SECONDS` seconds (default 30) while parts finish, and one when the
stage is done: `heuristics: 12/40 parts, 31 s`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

PROGRESS_SECONDS_ENV = "TEXTMILL_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0
POLL_SECONDS = 0.1


def track(futures: Sequence, desc: str) -> None:
    """Block until every future is done (finished or failed), showing progress on stderr."""
    if sys.stderr.isatty():
        _bar(futures, desc)
    else:
        _plain_lines(futures, desc, _interval())


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(PROGRESS_SECONDS_ENV, DEFAULT_PROGRESS_SECONDS)))
    except ValueError:
        return DEFAULT_PROGRESS_SECONDS


def _bar(futures: Sequence, desc: str) -> None:
    from dask.distributed import as_completed
    from tqdm import tqdm

    with tqdm(total=len(futures), desc=desc, unit="part", file=sys.stderr, leave=True,
              dynamic_ncols=True) as bar:
        for _ in as_completed(futures):
            bar.update(1)


def _plain_lines(futures: Sequence, desc: str, every: float) -> None:
    started = time.monotonic()
    last_line = started
    while True:
        done = sum(f.done() for f in futures)
        now = time.monotonic()
        if done == len(futures):
            break
        if now - last_line >= every:
            _line(desc, done, len(futures), now - started)
            last_line = now
        time.sleep(POLL_SECONDS)
    _line(desc, len(futures), len(futures), time.monotonic() - started)


def _line(desc: str, done: int, total: int, seconds: float) -> None:
    print(f"{desc}: {done}/{total} parts, {seconds:.0f} s", file=sys.stderr, flush=True)
