"""Which tasks an evaluation scores, and what decontamination took out of the corpus for each.

A name is looked up in the task registry (the shipped tasks and `--registry` files) and in
the run's OUT/decontamination.json, which records every task the corpus was cleaned
against with its files' digests. Found in both, the two must be the same test set (file
contents and text fields), else a TaskError: a score on other files than the corpus was
cleaned against would pass for a clean one. Found only in the corpus's record, the task is
scored on the recorded files, if they are still the bytes curation read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from curation.tasks.registry import (
    Registry,
    ResolvedTask,
    TaskError,
    build_registry,
    file_sha256,
    resolve_entry,
)


@dataclass(frozen=True)
class EvalTask:
    task: ResolvedTask
    # The task's line of decontamination.json ({} when checked and nothing matched); None
    # when the corpus was not cleaned against it (or no curated OUT is known).
    decontamination: dict | None

    @property
    def name(self) -> str:
        return self.task.name


def read_decontamination(curated: str | Path | None) -> tuple[dict | None, str]:
    """(OUT/decontamination.json, its path) of a curated OUT, or (None, why not)."""
    if curated is None:
        return None, "no curated OUT (synthetic data; give --curated OUT)"
    from curation.storage import out_path

    path = out_path(str(curated)) / "decontamination.json"
    if not path.is_file():
        return None, f"no {path} (the corpus spec has no decontaminate stage)"
    return json.loads(path.read_text(encoding="utf-8")), str(path)


def select_tasks(names: list[str], registry_files: list[str] = (),
                 decontamination: dict | None = None, where: str = "decontamination.json"
                 ) -> list[EvalTask]:
    """The tasks named, resolved and checked before any model is loaded."""
    if not names:
        raise TaskError("no task named (--tasks NAME ...)")
    registry: Registry = build_registry(list(registry_files))
    recorded = (decontamination or {}).get("task_entries", {})
    selected = []
    for name in dict.fromkeys(names):
        record = recorded.get(name)
        if name in registry:
            task = resolve_entry(*registry[name])
            if record is not None:
                _check_against_record(task, record, where)
        elif record is not None:
            task = ResolvedTask.from_record(name, record, f"{where} (task_entries.{name})")
            _check_unchanged(task, record, where)
        else:
            known = sorted(set(registry) | set(recorded))
            raise TaskError(f"unknown task {name!r}: not in the task registry nor in {where} "
                            f"(known: {', '.join(known)}; add yours with --registry FILE)")
        if task.entry.kind is None:
            raise TaskError(f"task {name!r} ({task.origin}) has no `kind`: it is for "
                            "decontamination only; give it kind: cloze, choice or yesno")
        line = None
        if record is not None:
            line = (decontamination.get("tasks") or {}).get(name, {})
        selected.append(EvalTask(task, line))
    return selected


def _check_against_record(task: ResolvedTask, record: dict, where: str) -> None:
    ours = sorted(task.digests().values())
    if ours != sorted(record["files"].values()):
        raise TaskError(
            f"task {task.name!r}: the corpus was decontaminated against "
            f"{sorted(record['files'])} ({where}) but {task.origin} reads "
            f"{[str(f) for f in task.files]}, and their contents differ: one task name must "
            "mean one test set (point both at the same files, or rename one)")
    if task.text_fields() != list(record["fields"]):
        raise TaskError(
            f"task {task.name!r}: the corpus was decontaminated against the text fields "
            f"{record['fields']} ({where}) but {task.origin} has {task.text_fields()}")


def _check_unchanged(task: ResolvedTask, record: dict, where: str) -> None:
    for path, digest in {**record["files"], **(record.get("fewshot_files") or {})}.items():
        if not Path(path).is_file():
            raise TaskError(f"task {task.name!r}: {path} ({where}) is gone; register the "
                            "task's files with --registry FILE")
        if file_sha256(Path(path)) != digest:
            raise TaskError(f"task {task.name!r}: {path} changed since the corpus was "
                            f"decontaminated against it ({where})")
