"""What a curation stage is, what the pipeline offers it, and how it is scoped to sources.

A stage is a pure function of a partition (`run`), plus an optional global step
(`prepare`) that runs once on the driver before any partition is processed: train a
classifier, build an n-gram set, find duplicate clusters. `prepare` writes whatever
`run` needs into the stage's work directory; `run` reads it back on the worker.
The stage never knows how many workers there are.

Every stage's config takes `only: [sources]` or `exempt: [sources]` (ScopedConfig).
`Stage.process` applies that scope, in the shape of datatrove's filter base: the
documents of in-scope sources go through `run`, which returns what it keeps and, as
`Removed` / `Modified` decisions, why it dropped or changed the rest (`Decided`);
`process` writes the ledger rows for them, here and nowhere else, so every stage's rows
have the same columns, stage name and JSON details. The others pass through untouched
except for `annotate` (a stage that adds a column adds it to them too: language
detects, quality scores, neither removes). `prepare` sees only in-scope documents
through `StageContext.map`, unless it asks for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from pydantic import model_validator

from curation.config import StrictModel
from curation.documents import MODIFIED, REMOVED, empty_ledger, ledger_rows


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


@dataclass
class Decision:
    """Documents a stage removes or changes, for one `reason` (or one per document), with
    details (one dict for all, one per document, or none)."""

    docs: pd.DataFrame
    reason: str | Sequence[str]
    detail: dict | Sequence[dict] | None = None
    action: ClassVar[str]


class Removed(Decision):
    action = REMOVED


class Modified(Decision):
    """Kept, but changed: the new text is in `Decided.kept`."""

    action = MODIFIED


@dataclass
class Decided:
    """What `run` returns: the documents that go on, and the decisions about the others,
    in the order their ledger rows are written."""

    kept: pd.DataFrame
    decisions: list[Decision] = field(default_factory=list)


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

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided | StageOutput:
        """The stage on the in-scope documents of one partition: what it keeps and why it
        drops or changes the rest (a stage may still return its own ledger rows)."""
        raise NotImplementedError

    def ledger(self, decisions: list[Decision]) -> pd.DataFrame:
        """The ledger rows of `decisions`, in order: one per document."""
        frames = [ledger_rows(d.docs, self.name, d.action, d.reason, d.detail)
                  for d in decisions if len(d.docs)]
        return pd.concat(frames, ignore_index=True) if frames else empty_ledger()

    def _run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        result = self.run(docs, part, workdir)
        if isinstance(result, Decided):
            return StageOutput(result.kept.reset_index(drop=True), self.ledger(result.decisions))
        return result

    def annotate(self, docs: pd.DataFrame, workdir: Path) -> pd.DataFrame:
        """Out-of-scope documents as they leave the stage (unchanged unless overridden)."""
        return docs

    def process(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        """`run` on the in-scope documents; the rest pass through `annotate`."""
        inside = self.config.in_scope(docs["source"].astype(str))
        if inside.all():
            return self._run(docs, part, workdir)
        passed = self.annotate(docs[~inside].reset_index(drop=True), workdir)
        if not inside.any():
            return StageOutput(passed, empty_ledger())
        result = self._run(docs[inside].reset_index(drop=True), part, workdir)
        kept = pd.concat([result.kept, passed], ignore_index=True)
        return StageOutput(kept, result.ledger)
