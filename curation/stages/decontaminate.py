"""The `decontaminate` stage: MT-NLG's 13-gram removal of evaluation-task text.

`prepare` builds the task key table once (a sorted uint64 array written to the work
directory, which workers memory-load once per process), then counts, for every key, the
corpus documents that contain it and keeps only keys found in fewer than `max_matches`
documents: a task n-gram that widespread is a phrase, not a leak. `process` finds the
remaining keys in a partition with vectorised probes and cuts only the documents that
contain one.

A cut document keeps its id; its text becomes its clean pieces joined by a blank line,
with a `modified` ledger row listing every cut. (Megatron's tool writes each piece as a
separate document; one row per input document keeps the ledger's in = kept + removed.)
A document split into more than `max_splits` pieces, or left with no piece, is removed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from curation.atomic import atomic_path, write_json_atomic
from curation.decontam.cut import Cut, Match, cut_text
from curation.decontam.ngrams import (
    MAX_TASKS,
    WORD,
    TaskTable,
    build_task_table,
    find_matches,
)
from curation.decontam.summary import summarize_decontamination
from curation.documents import MODIFIED, REMOVED, empty_ledger, ledger_rows
from curation.stages.base import ScopedConfig, Stage, StageOutput
from curation.storage import file_stamp, out_path
from curation.tasks.entry import TaskEntry
from curation.tasks.files import read_task_texts
from curation.tasks.registry import ResolvedTask, TaskError, resolve, shipped_registry
from curation.worker_cache import load_once

TASK_TABLE = "task_ngrams.npz"
ACTIVE_TABLE = "active_ngrams.npz"
COUNTS_DONE = "ngram_counts.json"


class DecontaminateConfig(ScopedConfig):
    ngram: int = Field(13, ge=2)
    max_matches: int = Field(10, ge=1)
    tasks: list[TaskEntry] = Field(min_length=1, max_length=MAX_TASKS)
    min_task_words: int = Field(8, ge=1)
    window: int = Field(200, ge=0)
    min_piece: int = Field(200, ge=0)
    max_splits: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> DecontaminateConfig:
        if self.min_task_words > self.ngram:
            raise ValueError(f"min_task_words ({self.min_task_words}) > ngram ({self.ngram})")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        shipped = shipped_registry()
        unregistered = [t.name for t in self.tasks if t.paths is None and t.name not in shipped]
        if unregistered:
            raise ValueError(f"task {unregistered[0]!r} gives no `paths` and is not a shipped "
                             f"task ({', '.join(sorted(shipped))})")
        return self

    def resolved_tasks(self, base_dir: Path) -> list[ResolvedTask]:
        """Each task with its files, a registered name resolved through the task registry."""
        return [resolve(task, base_dir, f"decontaminate.tasks[{j}]")
                for j, task in enumerate(self.tasks)]

    def missing_files(self, base_dir: Path) -> list[str]:
        problems = []
        for j, task in enumerate(self.tasks):
            try:
                resolve(task, base_dir, f"decontaminate.tasks[{j}]")
            except FileNotFoundError as exc:
                problems.append(f"tasks[{j}].paths: {exc}")
            except TaskError as exc:
                problems.append(f"tasks[{j}]: {exc}")
        return problems


def load_table(path: Path | str) -> TaskTable:
    """The task table at `path`, loaded once per worker process (reloaded if rewritten)."""
    return load_once(path, _load_task_table)


def _load_task_table(path: str) -> TaskTable:
    return TaskTable.load(Path(path))


def count_task_ngrams(docs: pd.DataFrame, part: int, table_path: str):
    """First pass on one partition: (key indices, documents containing each) of the task
    keys in it. A key repeated inside one document counts once, as in Megatron's
    filter_ngrams.py: the cap asks how widespread a phrase is, not how often one page
    repeats it."""
    table = load_table(table_path)
    matches = find_matches(docs["text"].tolist(), table)
    pairs = np.unique(matches.text.astype(np.int64) * len(table) + matches.key)
    return np.unique(pairs % len(table), return_counts=True)


class DecontaminateStage(Stage):
    name = "decontaminate"
    config_class = DecontaminateConfig

    def _tasks(self) -> list[ResolvedTask]:
        return self.config.resolved_tasks(Path(getattr(self.spec, "base_dir", ".")))

    def params(self) -> dict:
        digests = {path: digest for task in self._tasks()
                   for path, digest in task.digests().items()}
        return {**super().params(), "task_files": digests}

    def prepare(self, ctx) -> None:
        workdir = out_path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        fingerprint = _fingerprint(self.params(), ctx.partitions)
        done = workdir / COUNTS_DONE
        if done.exists() and json.loads(done.read_text()).get("fingerprint") == fingerprint:
            return
        tasks = [
            (task.name, [text for path in task.files
                         for text in read_task_texts(path, task.text_fields())])
            for task in self._tasks()
        ]
        table = build_task_table(tasks, self.config.ngram, self.config.min_task_words)
        _save_table(table, workdir / TASK_TABLE)
        counts = np.zeros(len(table), dtype=np.int64)
        per_part = ctx.map(count_task_ngrams, str(workdir / TASK_TABLE), columns=["text"],
                           desc="decontaminate: count task n-grams")
        for keys, occurrences in per_part:
            counts[keys] += occurrences
        active = (counts > 0) & (counts < self.config.max_matches)
        _save_table(table.subset(active), workdir / ACTIVE_TABLE)
        stats = {
            "fingerprint": fingerprint,
            "task_keys": int(len(table)),
            "keys_in_corpus": int((counts > 0).sum()),
            "keys_over_cap": int((counts >= self.config.max_matches).sum()),
            "keys_active": int(active.sum()),
        }
        write_json_atomic(done, stats)
        print(f"decontaminate: {stats['task_keys']} task keys, {stats['keys_in_corpus']} seen "
              f"in the corpus, {stats['keys_over_cap']} ignored as too common "
              f"(in >= {self.config.max_matches} documents)")

    def summarize(self, out: Path, client=None) -> None:
        """OUT/decontamination.json: per task, what was cut and dropped (from the ledger)."""
        summarize_decontamination(out_path(out) / "ledger", out_path(out) / "decontamination.json",
                                  client=client,
                                  task_records={t.name: t.record() for t in self._tasks()})

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        path = out_path(workdir) / ACTIVE_TABLE
        if not path.exists():
            raise FileNotFoundError(f"{path}: decontaminate.prepare has not run")
        table = load_table(path)
        texts = docs["text"].tolist()
        matches = find_matches(texts, table)
        if len(matches.key) == 0:
            return StageOutput(docs.reset_index(drop=True), empty_ledger())
        cfg = self.config
        new_texts = list(texts)
        removed, removed_reason, removed_detail = [], [], []
        modified, modified_detail = [], []
        bounds = np.searchsorted(matches.text, np.arange(len(texts) + 1))
        for d in np.unique(matches.text):
            lo, hi = bounds[d], bounds[d + 1]
            text = texts[d]
            spans = [(w.start(), w.end()) for w in WORD.finditer(text)]
            doc_matches = [
                Match(spans[s][0], spans[s + n - 1][1], int(k))
                for s, n, k in zip(matches.start[lo:hi], matches.length[lo:hi],
                                   matches.key[lo:hi], strict=True)
            ]
            pieces, cuts = cut_text(text, doc_matches, cfg.window, cfg.min_piece)
            described = [_describe(cut, text, table) for cut in cuts]
            if len(pieces) > cfg.max_splits or not pieces:
                removed.append(d)
                removed_reason.append("contaminated_too_many_splits" if pieces
                                      else "contaminated_nothing_left")
                removed_detail.append({"pieces": len(pieces), "chars": len(text),
                                       "cuts": described})
            else:
                new_texts[d] = "\n\n".join(pieces)
                modified.append(d)
                modified_detail.append({
                    "pieces": len(pieces),
                    "chars_removed": sum(c.removed_end - c.removed_start for c in cuts),
                    "cuts": described,
                })
        kept_mask = np.ones(len(docs), dtype=bool)
        kept_mask[removed] = False
        out = docs.reset_index(drop=True).copy()
        out["text"] = pd.Series(new_texts, dtype=out["text"].dtype)
        ledger = pd.concat(
            [
                ledger_rows(out.iloc[modified], self.name, MODIFIED, "contaminated_cut",
                            modified_detail),
                ledger_rows(out.iloc[removed], self.name, REMOVED, removed_reason,
                            removed_detail),
            ],
            ignore_index=True,
        )
        return StageOutput(out[kept_mask].reset_index(drop=True), ledger)


def _describe(cut: Cut, text: str, table: TaskTable) -> dict:
    words = WORD.findall(text[cut.match.start : cut.match.end])
    return {
        "tasks": table.tasks_of(cut.match.key),
        "ngram": " ".join(w.lower() for w in words),
        "match": [cut.match.start, cut.match.end],
        "removed": [cut.removed_start, cut.removed_end],
    }


def _save_table(table: TaskTable, path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        table.save(handle)


def _fingerprint(params: dict, partitions) -> str:
    """Identity of a counting pass: the stage's parameters and the exact input files."""
    files = []
    for p in partitions:
        files.append([str(p), *file_stamp(p)])
    blob = json.dumps({"params": params, "partitions": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()
