"""Few, large tasks: a map over many partitions runs as a bounded number of Dask tasks.

Every task costs the `curate` process the same whatever its size: a submitted future, a
key, messages from the scheduler, a result to unpack. One task per partition therefore
makes the driver's work grow with the corpus. Here a map over N items becomes at most
`TASKS_PER_THREAD` tasks per worker thread, each running the function on a contiguous
run of items, in order; the results come back flattened in item order, exactly as one
task per item would give them, so outputs do not depend on the batching (nor on the
number of workers). Several tasks per thread leave the scheduler room to balance uneven
partitions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from curation.progress import track

TASKS_PER_THREAD = 4


def task_count(client, items: int) -> int:
    """How many tasks a map over `items` items becomes on `client`'s cluster."""
    threads = sum(client.nthreads().values())
    return max(1, min(items, TASKS_PER_THREAD * max(1, threads)))


def split(items: Sequence, parts: int) -> list[list]:
    """`items` cut into `parts` contiguous runs whose lengths differ by at most one."""
    size, extra = divmod(len(items), parts)
    runs, start = [], 0
    for k in range(parts):
        end = start + size + (k < extra)
        runs.append(list(items[start:end]))
        start = end
    return [run for run in runs if run]


def run_batch(fn: Callable, batch: list, args: tuple) -> list:
    """On a worker: `fn(item, *args)` for every item of the batch, in order."""
    return [fn(item, *args) for item in batch]


def submit_batches(client, fn: Callable, items: Sequence, *args: Any, name: str = "",
                   retries: int = 0) -> tuple[list, list[int]]:
    """Futures of the batch tasks (each resolving to a list of results) and the number of
    items each covers."""
    batches = split(items, task_count(client, len(items))) if items else []
    prefix = "-".join((name or getattr(fn, "__name__", "batch")).split())
    token = uuid.uuid4().hex[:12]
    futures = [client.submit(run_batch, fn, batch, args, retries=retries,
                             key=f"{prefix}-{k:04d}-of-{len(batches):04d}-{token}")
               for k, batch in enumerate(batches)]
    return futures, [len(batch) for batch in batches]


def gather_batches(client, futures: list) -> list:
    """The batch tasks' results, flattened back into item order."""
    return [value for batch in client.gather(futures) for value in batch]


def map_batched(client, fn: Callable, items: Sequence, *args: Any, desc: str = "",
                retries: int = 0) -> list:
    """[fn(item, *args) for item in items], run on the cluster in few tasks; progress on
    stderr under `desc` (counted in items) when given."""
    futures, sizes = submit_batches(client, fn, items, *args, name=desc.split(":")[0],
                                    retries=retries)
    if desc and futures:
        track(futures, desc, sizes)
    return gather_batches(client, futures)
