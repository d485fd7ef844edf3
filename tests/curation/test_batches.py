"""Few, large tasks: a map over many items runs in a bounded number of Dask tasks, with the
results (and a reduction's merge tree) exactly those of one task per item."""

from __future__ import annotations

import pytest

from curation.aggregate import FAN_IN, map_reduce
from curation.batches import TASKS_PER_THREAD, map_batched, split


def _square_and_task(item: int, offset: int) -> tuple[int, str]:
    from distributed import get_worker

    return item * item + offset, get_worker().get_current_task()


def _leaf(item: int) -> str:
    return str(item)


def _bracket(parts: list[str]) -> str:
    """A merge that spells out the tree it was applied in."""
    return "(" + ",".join(parts) + ")"


def _canonical_tree(items: list[int]) -> str:
    level = [_leaf(i) for i in items]
    while True:
        level = [_bracket(level[i:i + FAN_IN]) for i in range(0, max(1, len(level)), FAN_IN)]
        if len(level) == 1:
            return level[0]


def test_split_keeps_order_and_balances():
    runs = split(list(range(10)), 4)
    assert runs == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert split([1, 2], 5) == [[1], [2]]


def test_a_map_over_many_items_runs_in_few_tasks(dask_cluster_client):
    items = list(range(50))
    results = map_batched(dask_cluster_client, _square_and_task, items, 3)
    assert [value for value, _ in results] == [i * i + 3 for i in items]
    threads = sum(dask_cluster_client.nthreads().values())
    assert len({task for _, task in results}) <= TASKS_PER_THREAD * threads < len(items)


@pytest.mark.parametrize("n", [0, 1, 5, 8, 9, 40, 64, 65, 300])
def test_map_reduce_merges_in_the_same_tree_however_it_is_batched(dask_cluster_client, n):
    items = list(range(n))
    merged = map_reduce(dask_cluster_client, _leaf, items, _bracket).result()
    assert merged == _canonical_tree(items)
