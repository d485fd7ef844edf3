"""Reading task files (JSONL, JSONL.gz, Parquet): their records, and the texts in them.

Users export any benchmark to a file and name the fields that hold task text; each
field of each record is one task text (a list of strings gives several). A missing
field or a value that is not text is an error naming the file, the row and the field.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from pathlib import Path

from curation.jsonl import read_jsonl

FORMATS = (".jsonl.gz", ".jsonl", ".parquet")


def task_files(patterns: Sequence[str], base_dir: Path, label: str) -> list[Path]:
    """The files matched by `patterns` (globs relative to `base_dir`), sorted; `label` says
    whose files they are in the error (e.g. "decontaminate task 'qa'", "select target")."""
    files: list[Path] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(Path(base_dir) / pattern)
        matched = sorted(glob.glob(full, recursive=True))
        if not matched:
            raise FileNotFoundError(f"{label}: no file matches {full!r}")
        files.extend(Path(m) for m in matched)
    return files


def read_task_texts(path: Path, fields: Sequence[str]) -> list[str]:
    """Every task text in one file: the listed fields of every record, in order."""
    texts: list[str] = []
    for row, record in read_records(path):
        for field in fields:
            if field not in record:
                raise ValueError(f"{path}: row {row}: task field {field!r} is missing")
            texts.extend(_field_texts(record[field], path, row, field))
    return texts


def _field_texts(value, path: Path, row: int, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ValueError(
        f"{path}: row {row}: task field {field!r} must be text or a list of texts, "
        f"got {type(value).__name__}"
    )


def read_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(row or line number, record) of every record in a task file."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist(), start=1)
        return
    if not name.endswith((".jsonl", ".jsonl.gz")):
        raise ValueError(f"{path}: unknown task file format (expected one of {FORMATS})")
    yield from read_jsonl(path)
