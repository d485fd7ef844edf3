"""Atomic file writes: a reader (or a resumed run) never sees half a file.

Locally: a temporary file beside the target, renamed into place. On object storage (OUT
as an fsspec URL): a local temporary file, uploaded in one put (a multipart upload is
also all-or-nothing: the object appears only when it completes).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation.storage import is_remote, out_path


@contextmanager
def atomic_path(final):
    """Yield a temporary local path; it becomes `final` (renamed or uploaded) on success."""
    final = out_path(final)
    if is_remote(final):
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            final.fs.put_file(tmp, final.path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_parquet(frame: pd.DataFrame | pa.Table, final: Path | str,
                         schema: pa.Schema | None = None) -> None:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(
        frame, schema=schema, preserve_index=False)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def save_npy(final, array: np.ndarray) -> None:
    """`np.save` to `final` (in OUT, local or an fsspec URL), atomically."""
    with atomic_path(final) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_json_atomic(final: Path | str, data: object) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_text_atomic(final: Path | str, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
