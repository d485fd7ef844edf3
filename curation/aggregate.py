"""Map a function over many files on the cluster and merge the results there, in a tree.

The `curate` process must not do work that grows with the corpus: it hands out one task per
file and receives one merged value (counts, a bounded sample, a histogram), never one
result per partition. Merges combine neighbours in file order, so a merge that
concatenates, keeps the first rows or sums gives the same value on any number of workers.
Without a client (`curate report` run on its own) the same functions run here, one file at
a time, holding one partition and the running aggregate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

FAN_IN = 8  # partial results per merge task


def submit(client, fn: Callable, *args: Any):
    """`fn(*args)` on the cluster (a future), or here when there is no client (a value)."""
    return fn(*args) if client is None else client.submit(fn, *args, pure=False)


def result(client, value):
    """The value of what `submit` or `map_reduce` returned."""
    return value if client is None else value.result()


def map_reduce(client, fn: Callable, items: Sequence, merge: Callable[[list], Any],
               *args: Any, desc: str = ""):
    """merge([fn(item, *args) for item in items]), with `merge` applied to at most FAN_IN
    neighbours at a time, on the workers. Returns a future (a value without a client);
    `merge` must be associative, and must accept a list of one."""
    if client is None:
        merged = merge([fn(items[0], *args)]) if items else merge([])
        for item in items[1:]:
            merged = merge([merged, fn(item, *args)])
        return merged
    level = [client.submit(fn, item, *args, pure=False) for item in items]
    if desc and level:
        from curation.progress import track

        track(level, desc)
    while True:  # at least one merge, as without a client
        level = [client.submit(merge, level[i:i + FAN_IN], pure=False)
                 for i in range(0, max(1, len(level)), FAN_IN)]
        if len(level) == 1:
            return level[0]
