"""Input files: expand a source's paths, then stream each file as documents plus ledger rows.

Local globs resolve against the spec's directory; anything with `://` goes through
fsspec (`memory://`, `file://`, `s3://`, ...). Compression follows the file suffix
(`.gz`, `.zst`/`.zstd`), never fsspec's guess, so a cut-off file is detected here. A file
is read as a stream: one chunk of records (and one record) in memory at a time.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import fsspec
import pandas as pd
import pyarrow as pa

from curation.readers.jsonl import read_jsonl
from curation.readers.parquet import read_parquet
from curation.readers.records import ChunkBuilder

log = logging.getLogger(__name__)

DEFAULT_MAX_RECORD_BYTES = 16 << 20
DEFAULT_CHUNK_BYTES = 64 << 20
FORMATS = ("jsonl", "parquet")


class InputError(Exception):
    """An input that cannot be read at all; the message names the path (and pattern)."""


def zstd_module():
    """The standard library's zstd (3.14+) or its backport: both raise EOFError on a cut file."""
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd


def _is_url(path: str) -> bool:
    return "://" in path


def expand_paths(patterns: list[str], base_dir: Path) -> list[str]:
    """Every file named by `patterns`, sorted and without repeats.

    A pattern that matches nothing, or a match that is a directory, is an InputError:
    a spec that silently reads fewer files than its author meant is worse than a stop.
    """
    found: set[str] = set()
    for pattern in patterns:
        if _is_url(pattern):
            fs, root = fsspec.core.url_to_fs(pattern)
            if glob.has_magic(root):
                matches = fs.glob(root)
            else:
                matches = [root] if fs.exists(root) else []
            is_dir = fs.isdir
            names = {m: fs.unstrip_protocol(m) for m in matches}
        else:
            full = os.path.join(Path(base_dir), os.path.expanduser(pattern))
            if glob.has_magic(pattern):
                matches = glob.glob(full, recursive=True)
            else:
                matches = [full] if os.path.exists(full) else []
            is_dir = os.path.isdir
            names = {m: os.path.abspath(m) for m in matches}
        if not matches:
            where = "" if _is_url(pattern) else f" (relative to {base_dir})"
            raise InputError(f"input pattern {pattern!r} matches no file{where}")
        for match in matches:
            if is_dir(match):
                raise InputError(
                    f"{names[match]}: is a directory, expected a file (from pattern {pattern!r})"
                )
        found.update(names.values())
    return sorted(found)


@contextmanager
def open_raw(path: str) -> Iterator[BinaryIO]:
    """The file's bytes as stored (still compressed), local or through fsspec."""
    if _is_url(path):
        fs, root = fsspec.core.url_to_fs(path)
        if fs.isdir(root):
            raise InputError(f"{path}: is a directory, expected a file")
        handle = fs.open(root, "rb")
    else:
        if os.path.isdir(path):
            raise InputError(f"{path}: is a directory, expected a file")
        handle = open(path, "rb")
    with handle:
        yield handle


@contextmanager
def open_decompressed(path: str) -> Iterator[BinaryIO]:
    """The file's content, decompressed by suffix; reads raise EOFError on a cut-off file."""
    with open_raw(path) as raw:
        name = path.lower()
        if name.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream
        elif name.endswith((".zst", ".zstd")):
            with zstd_module().ZstdFile(raw, mode="rb") as stream:
                yield stream
        else:
            yield raw


def _is_empty(raw: BinaryIO) -> bool:
    first = raw.read(1)
    raw.seek(0)
    return not first


def read_documents(
    path: str,
    *,
    source: str,
    file_key: str,
    fmt: str,
    text_field: str = "text",
    id_field: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    chunk_rows: int = 10_000,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Stream one file as (documents, ledger) chunks: DOCUMENT_COLUMNS (plus `row`, the
    record's 0-based index in the file) and LEDGER_COLUMNS.

    `file_key` names the file inside ids (`<source>/<file_key>/<row>` when the record
    has no `id_field`). Malformed records become `read`/`removed` ledger rows; only a
    file that cannot be opened at all (a directory, a Parquet file without a footer) is
    an InputError. An empty file yields nothing: it holds no record to account for.

    Ledger reasons: bad_json (also JSON nested too deeply to parse), not_an_object,
    missing_text (absent or null), text_not_string, invalid_utf8 (also a lone surrogate
    escape), nul_byte (raw or escaped), empty_text (""; whitespace-only text is left to
    normalize), record_too_large, missing_id / bad_id (with `id_field`: absent or null /
    not a string or integer), truncated_file and corrupt_file (one row at the line where
    a compressed stream broke; records in the damaged compressed block are lost with it).
    """
    if fmt not in FORMATS:
        raise InputError(f"{path}: unknown format {fmt!r}, expected one of {FORMATS}")
    builder = ChunkBuilder(
        source=source, file_key=file_key, path=path, chunk_rows=chunk_rows, chunk_bytes=chunk_bytes
    )
    with open_raw(path) as raw:
        if _is_empty(raw):
            log.warning("%s: empty file, no records", path)
            return
    if fmt == "jsonl":
        with open_decompressed(path) as stream:
            yield from read_jsonl(
                stream, builder, text_field=text_field, id_field=id_field,
                max_record_bytes=max_record_bytes,
            )
        return
    with open_raw(path) as raw:
        try:
            chunks = read_parquet(
                raw, builder, text_field=text_field, id_field=id_field, batch_rows=chunk_rows
            )
            yield from chunks
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f"{path}: not a readable Parquet file ({err})") from err
