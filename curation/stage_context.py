"""The pipeline's implementation of StageContext: run a function over every partition."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from curation.batches import map_batched
from curation.storage import out_path, read_parquet_table


def read_partition(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """One materialised partition as a DataFrame (parquet written by the pipeline)."""
    return read_parquet_table(path, columns=columns).to_pandas()


def _run_on_partition(fn: Callable, path: str, part: int, columns, sources, args) -> Any:
    if sources is None:
        return fn(read_partition(path, columns), part, *args)
    docs = read_partition(path, None if columns is None else sorted({*columns, "source"}))
    docs = docs[docs["source"].isin(sources)].reset_index(drop=True)
    return fn(docs if columns is None else docs[columns], part, *args)


def _run_on_numbered_partition(numbered: tuple[int, str], fn: Callable, columns, sources,
                               args) -> Any:
    part, path = numbered
    return _run_on_partition(fn, path, part, columns, sources, args)


class ClusterStageContext:
    """A stage's view of the run: its inputs, its work directory and the cluster.

    `sources`: the sources the stage is scoped to (None: all); `map` shows a function
    only their documents unless asked for all.
    """

    def __init__(self, spec: Any, out: Path, workdir: Path, partitions: list[Path], client: Any,
                 sources: list[str] | None = None):
        self.spec = spec
        self.sources = sources
        self.out = out_path(out)
        self.workdir = out_path(workdir)
        self.partitions = [out_path(p) for p in partitions]
        self.client = client

    def map(
        self, fn: Callable[..., Any], *args: Any, columns: list[str] | None = None,
        desc: str = "", skip: Callable[[int], bool] | None = None,
        all_sources: bool = False,
    ) -> list[Any]:
        """Run `fn(docs, part, *args)` on every input partition not skipped; results in
        partition order, None for a skipped one. `docs` holds the in-scope documents only,
        unless `all_sources`."""
        sources = None if all_sources else self.sources
        todo = [i for i in range(len(self.partitions)) if skip is None or not skip(i)]
        done = map_batched(self.client, _run_on_numbered_partition,
                           [(i, str(self.partitions[i])) for i in todo], fn, columns, sources,
                           args, desc=desc or getattr(fn, "__name__", "map"))
        results = [None] * len(self.partitions)
        for i, result in zip(todo, done, strict=True):
            results[i] = result
        return results
