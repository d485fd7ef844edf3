"""A task's files as the JSONL its kind's YAML reads: the kind's roles, checked row by row.

The registry lets a task keep its own field names (`columns`) and formats (JSONL, JSONL.gz,
Parquet); lm-eval reads one local JSONL per split (`dataset_path: json`). Writing that file
here checks every record first, so a bad row is one error naming the file, the row and the
field, before any model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from curation.tasks.files import read_records
from curation.tasks.registry import ResolvedTask

YES = {"yes", "true", "1"}
NO = {"no", "false", "0"}


class TaskDataError(ValueError):
    """A task record its kind cannot use."""


def write_task_data(task: ResolvedTask, out_dir: Path) -> dict[str, Path]:
    """{"test": file, and "fewshot": file when the task has few-shot files} under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"test": task.files}
    if task.fewshot_files:
        splits["fewshot"] = task.fewshot_files
    written = {}
    for split, files in splits.items():
        records = [_canonical(task, path, row, record)
                   for path in files for row, record in read_records(path)]
        if not records:
            raise TaskDataError(f"task {task.name!r}: no records in {[str(f) for f in files]}")
        path = out_dir / f"{task.name}.{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                        encoding="utf-8")
        written[split] = path
    return written


def count_items(path: Path) -> int:
    with open(path, encoding="utf-8") as lines:
        return sum(1 for line in lines if line.strip())


def _canonical(task: ResolvedTask, path: Path, row: int, record: dict) -> dict:
    entry = task.entry

    def field(role: str):
        name = entry.column(role)
        if name not in record:
            raise TaskDataError(f"{path}: row {row}: field {name!r} ({entry.kind} task "
                                f"{task.name!r}, role {role}) is missing")
        return name, record[name]

    def text(role: str) -> str:
        name, value = field(role)
        if not isinstance(value, str) or not value.strip():
            raise TaskDataError(f"{path}: row {row}: field {name!r} must be non-empty text, "
                                f"got {value!r:.60}")
        return value

    if entry.kind == "cloze":
        value = text("text").strip()
        if len(value.split(" ")) < 2:
            raise TaskDataError(f"{path}: row {row}: field {entry.column('text')!r} needs a "
                                "passage and a last word")
        return {"text": value}
    if entry.kind == "choice":
        return {"context": text("context"), **_choices(entry, path, row, record)}
    if entry.kind == "yesno":
        return {"passage": text("passage"), "question": text("question"),
                "label": _yes_no(*field("label"), path, row)}
    raise TaskDataError(f"task {task.name!r} has no `kind` ({task.origin}): it is for "
                        "decontamination only; give it kind: cloze, choice or yesno to "
                        "evaluate it")


def _choices(entry, path: Path, row: int, record: dict) -> dict:
    columns = entry.column("choices")
    if isinstance(columns, list):
        missing = [c for c in columns if c not in record]
        choices = [record.get(c) for c in columns]
        where = f"fields {columns}"
    else:
        missing = [] if columns in record else [columns]
        choices = record.get(columns)
        where = f"field {columns!r}"
    if missing:
        raise TaskDataError(f"{path}: row {row}: field {missing[0]!r} (choices) is missing")
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise TaskDataError(f"{path}: row {row}: {where} must hold at least two texts")
    name = entry.column("label")
    label = record.get(name)
    if isinstance(label, str) and label.strip().isdigit():
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise TaskDataError(f"{path}: row {row}: field {name!r} must be the 0-based index of "
                            f"the right choice (0..{len(choices) - 1}), got {label!r}")
    return {"choices": choices, "label": label}


def _yes_no(name: str, value, path: Path, row: int) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in YES | NO:
        return int(value.strip().lower() in YES)
    raise TaskDataError(f"{path}: row {row}: field {name!r} must be yes/no (true/false, "
                        f"1/0), got {value!r}")
