"""Map a function over many files on the cluster and merge the results there, in a tree.

The `curate` process must not do work that grows with the corpus: it hands out a few tasks
per worker, each over a run of neighbouring files (curation.batches), and receives one
merged value (counts, a bounded sample, a histogram), never one
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


def _merge_levels(values: list, levels: int, merge: Callable[[list], Any]) -> list:
    """`levels` rounds of the merge tree: neighbours merged FAN_IN at a time."""
    for _ in range(levels):
        values = [merge(values[i:i + FAN_IN]) for i in range(0, max(1, len(values)), FAN_IN)]
    return values


def _subtree(fn: Callable, batch: list, levels: int, merge: Callable[[list], Any],
             args: tuple):
    """On a worker: the node `levels` above the leaves of the merge tree over `batch`."""
    return _merge_levels([fn(item, *args) for item in batch], levels, merge)[0]


def _tree_levels(items: int) -> int:
    """Merge rounds from the leaves to the root (at least one, as without a client)."""
    levels, width = 1, FAN_IN
    while width < items:
        levels, width = levels + 1, width * FAN_IN
    return levels


def map_reduce(client, fn: Callable, items: Sequence, merge: Callable[[list], Any],
               *args: Any, desc: str = ""):
    """merge([fn(item, *args) for item in items]), with `merge` applied to at most FAN_IN
    neighbours at a time, on the workers. Returns a future (a value without a client);
    `merge` must be associative, and must accept a list of one.

    On a cluster the tree is the same whatever the number of workers (so are floating-point
    sums): each task computes a whole subtree over FAN_IN**j aligned neighbours, j the
    smallest that keeps the tasks within curation.batches' bound."""
    if client is None:
        merged = merge([fn(items[0], *args)]) if items else merge([])
        for item in items[1:]:
            merged = merge([merged, fn(item, *args)])
        return merged
    from curation.batches import task_count

    if not items:
        return client.submit(merge, [], pure=False)
    levels, limit = _tree_levels(len(items)), task_count(client, len(items))
    below = 0
    while below < levels and -(-len(items) // FAN_IN ** below) > limit:
        below += 1
    size = FAN_IN ** below
    batches = [list(items[i:i + size]) for i in range(0, len(items), size)]
    level = [client.submit(_subtree, fn, batch, below, merge, args, pure=False)
             for batch in batches]
    if desc:
        from curation.progress import track

        track(level, desc, [len(batch) for batch in batches])
    for _ in range(levels - below):
        level = [client.submit(merge, level[i:i + FAN_IN], pure=False)
                 for i in range(0, len(level), FAN_IN)]
    return level[0]
