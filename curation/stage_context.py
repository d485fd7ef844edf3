"""The pipeline's implementation of StageContext: run a function over every partition."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from curation.progress import track
from curation.storage import out_path, read_parquet_table


def read_partition(path: Path | str, columns: list[str] | None = None) -> pd.DataFrame:
    """One materialised partition as a DataFrame (parquet written by the pipeline)."""
    return read_parquet_table(path, columns=columns).to_pandas()


def _run_on_partition(fn: Callable, path: str, part: int, columns, args) -> Any:
    return fn(read_partition(path, columns), part, *args)


class ClusterStageContext:
    """A stage's view of the run: its inputs, its work directory and the cluster."""

    def __init__(self, spec: Any, out: Path, workdir: Path, partitions: list[Path], client: Any):
        self.spec = spec
        self.out = out_path(out)
        self.workdir = out_path(workdir)
        self.partitions = [out_path(p) for p in partitions]
        self.client = client

    def map(
        self, fn: Callable[..., Any], *args: Any, columns: list[str] | None = None,
        desc: str = "", skip: Callable[[int], bool] | None = None,
    ) -> list[Any]:
        """Run `fn(docs, part, *args)` on every input partition not skipped; results in
        partition order, None for a skipped one."""
        todo = [i for i in range(len(self.partitions)) if skip is None or not skip(i)]
        futures = [
            self.client.submit(_run_on_partition, fn, str(self.partitions[i]), i, columns, args,
                               pure=False)
            for i in todo
        ]
        if futures:
            track(futures, desc or getattr(fn, "__name__", "map"))
        results = [None] * len(self.partitions)
        for i, result in zip(todo, self.client.gather(futures), strict=True):
            results[i] = result
        return results
