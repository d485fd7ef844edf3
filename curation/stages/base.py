"""What a curation stage is, what the pipeline offers it, and how it is scoped to sources.

A stage is a pure function of a partition (`run`), plus an optional global step
(`prepare`) that runs once on the driver before any partition is processed: train a
classifier, build an n-gram set, find duplicate clusters. `prepare` writes whatever
`run` needs into the stage's work directory; `run` reads it back on the worker.
The stage never knows how many workers there are.

Every stage's config takes `only: [sources]` or `exempt: [sources]` (ScopedConfig).
`Stage.process` applies that scope, in the shape of datatrove's filter base: the
documents of in-scope sources go through `run`, which returns what it keeps and a
ledger row for everything it removes or changes; the others pass through untouched
except for `annotate` (a stage that adds a column adds it to them too: language
detects, quality scores, neither removes). `prepare` sees only in-scope documents
through `StageContext.map`, unless it asks for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pydantic import model_validator

from curation.config import StrictModel
from curation.documents import empty_ledger


class ScopedConfig(StrictModel):
    """The sources a stage applies to: all (default), `only` these, or all but `exempt`."""

    only: list[str] | None = None
    exempt: list[str] | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> ScopedConfig:
        if self.only is not None and self.exempt is not None:
            raise ValueError("give `only` or `exempt`, not both")
        return self

    def in_scope(self, sources: pd.Series | np.ndarray) -> np.ndarray:
        """Per document (by its source): does the stage apply to it?"""
        sources = pd.Series(np.asarray(sources, dtype=object))
        if self.only is not None:
            return sources.isin(self.only).to_numpy()
        if self.exempt:
            return (~sources.isin(self.exempt)).to_numpy()
        return np.ones(len(sources), dtype=bool)

    def missing_files(self, base_dir: Path) -> list[str]:
        """Problems with the files this config names, each as `key: problem` (checked by
        `curate validate` and before a run starts); none by default."""
        return []

    def sources_in_scope(self, names: list[str]) -> list[str] | None:
        """The spec's sources the stage applies to; None when it applies to all."""
        if self.only is None and not self.exempt:
            return None
        return [name for name, inside in zip(names, self.in_scope(names), strict=True) if inside]


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
        all_sources: bool = False,
    ) -> list[Any]:
        """Run `fn(docs, part, *args)` on every input partition on the cluster.

        `docs` is the partition as a DataFrame (only `columns` when given), `part` its
        index; it holds only the documents of the stage's in-scope sources unless
        `all_sources`. Results come back in partition order. `fn` must be a module-level
        function. Partitions for which `skip(part)` is true (work an interrupted run
        finished) are not read or run; their result is None.
        """
        ...


class Stage:
    """Base class: a named stage with a validated, source-scoped config and the spec.

    A subclass sets `name` and `config_class` and implements `run`; it is registered
    once, in curation/stages/registry.py, which fixes its place in the flow.
    """

    name: str = ""
    config_class: type[ScopedConfig] = ScopedConfig

    def __init__(self, config: Any, spec: Any):
        if not isinstance(config, self.config_class):
            config = self.config_class.model_validate(config or {})
        self.config = config
        self.spec = spec

    def params(self) -> dict:
        """Everything that determines this stage's output; hashed into its manifest."""
        return {"config": self.config.model_dump(mode="json")}

    def sources_in_scope(self) -> list[str] | None:
        """The spec's sources this stage applies to; None for all of them."""
        return self.config.sources_in_scope([s.name for s in self.spec.sources])

    def prepare(self, ctx: StageContext) -> None:
        """Optional global step before any partition is processed."""

    def summarize(self, out: Path, client=None) -> None:
        """Optional: write a run-level summary under OUT once OUT/ledger/ is complete, by
        aggregations on `client`'s workers (curation.aggregate)."""

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        """The stage on the in-scope documents of one partition."""
        raise NotImplementedError

    def annotate(self, docs: pd.DataFrame, workdir: Path) -> pd.DataFrame:
        """Out-of-scope documents as they leave the stage (unchanged unless overridden)."""
        return docs

    def process(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        """`run` on the in-scope documents; the rest pass through `annotate`."""
        inside = self.config.in_scope(docs["source"].astype(str))
        if inside.all():
            return self.run(docs, part, workdir)
        passed = self.annotate(docs[~inside].reset_index(drop=True), workdir)
        if not inside.any():
            return StageOutput(passed, empty_ledger())
        result = self.run(docs[inside].reset_index(drop=True), part, workdir)
        kept = pd.concat([result.kept, passed], ignore_index=True)
        return StageOutput(kept, result.ledger)
