"""What a curation stage is, and what the pipeline offers it.

A stage is a pure function of a partition (`process`), plus an optional global step
(`prepare`) that runs once on the driver before any partition is processed: train a
classifier, build an n-gram set, find duplicate clusters. `prepare` writes whatever
`process` needs into the stage's work directory; `process` reads it back on the worker.
The stage never knows how many workers there are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd


@dataclass
class StageOutput:
    """Kept documents go on; every removed or modified document has a ledger row."""

    kept: pd.DataFrame
    ledger: pd.DataFrame


class StageContext(Protocol):
    """The pipeline's services for a stage's global `prepare` step."""

    spec: Any  # curation.spec.Spec
    out: Path  # the run's OUT directory
    workdir: Path  # this stage's directory: OUT/stages/NN_<name>/
    partitions: list[Path]  # input partitions (parquet files of documents), in order
    client: Any  # dask.distributed.Client

    def map(
        self, fn: Callable[..., Any], *args: Any, columns: list[str] | None = None,
        desc: str = "", skip: Callable[[int], bool] | None = None,
    ) -> list[Any]:
        """Run `fn(docs, part, *args)` on every input partition on the cluster.

        `docs` is the partition as a DataFrame (only `columns` when given), `part` its
        index. Results come back in partition order. `fn` must be a module-level function.
        Partitions for which `skip(part)` is true (work an interrupted run finished) are not
        read or run; their result is None.
        """
        ...


class Stage:
    """Base class: a named stage with a validated config and the whole spec."""

    name: str = ""

    def __init__(self, config: Any, spec: Any):
        self.config = config
        self.spec = spec

    def params(self) -> dict:
        """Everything that determines this stage's output; hashed into its manifest."""
        return {"config": self.config.model_dump(mode="json") if self.config is not None else None}

    def prepare(self, ctx: StageContext) -> None:
        """Optional global step before any partition is processed."""

    def process(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        raise NotImplementedError
