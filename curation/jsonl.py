"""JSON-lines files of records (one JSON object a line, optionally gzipped), read with errors
that name the file and the line. One reader for curation's task files (tasks/files.py) and
the fine-tuning task sets (training/finetune/data.py): each caller passes its own error type
and the way its other messages name a line, so a file's errors read alike."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: Path, error: type[Exception] = ValueError,
               where: str = "{path}: line {line}") -> Iterator[tuple[int, dict]]:
    """(line number, record) of every non-blank line; `error(message)` on a line that is not
    JSON or not an object, the place written as `where` ({path}, {line})."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            place = where.format(path=path, line=number)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{place}: invalid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise error(f"{place}: expected a JSON object")
            yield number, record
