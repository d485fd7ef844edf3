"""Where a run's OUT lives: a local folder, or any fsspec URL (`s3://bucket/run`).

Every module that touches OUT takes its paths from `out_path`, which gives a `pathlib.Path`
for a local folder (unchanged behaviour) and a `UPath` for a URL, so `/`, `exists`,
`glob`, `read_text` work alike on both. What pathlib cannot say for object storage lives
here too: removing a tree, reading Parquet through the URL's filesystem, and the options
Dask needs to list what other processes wrote.

Endpoint and credentials never come from a spec: s3fs (botocore) reads them from where
its users keep them (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
`~/.aws/`, or fsspec's configuration, e.g. `FSSPEC_S3_ENDPOINT_URL`).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# Workers write while the driver lists: a cached listing would miss their files.
FRESH_LISTINGS = {"use_listings_cache": False}


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def out_path(path: str | os.PathLike):
    """A local `Path`, or a `UPath` on the URL's filesystem that never lists from cache."""
    if not is_url(path):
        return Path(path)
    if str(path).startswith("file://"):
        return Path(str(path)[len("file://"):])
    from upath import UPath

    return UPath(str(path), **FRESH_LISTINGS)


def resolved(path):
    """An absolute local path (symlinks resolved), or the URL as it is."""
    path = out_path(path)
    return path if is_remote(path) else path.resolve()


def joined(base, relative: str):
    """`base / relative` with `..` folded away (a manifest's relative tokenizer path)."""
    base = out_path(base)
    if not is_remote(base):
        return (base / relative).resolve()
    protocol, rest = str(base).split("://", 1)
    return out_path(f"{protocol}://{posixpath.normpath(posixpath.join(rest, relative))}")


def is_remote(path) -> bool:
    """A path on object storage (a UPath or a URL string), not the local filesystem."""
    return is_url(path) and not str(path).startswith("file://")


def dask_storage_options(path) -> dict | None:
    """`storage_options` for `dd.read_parquet` / `to_parquet` on `path`."""
    return dict(FRESH_LISTINGS) if is_remote(path) else None


def remove_tree(path) -> None:
    """Delete a folder and everything in it; nothing happens when it is absent."""
    path = out_path(path)
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def read_parquet_table(path, columns: list[str] | None = None, filters=None) -> pa.Table:
    """One Parquet file, or a folder of them (hive partitions included), local or remote;
    `filters` as in `pyarrow.parquet.read_table`."""
    path = out_path(path)
    if is_remote(path):
        return pq.read_table(path.path, columns=columns, filters=filters, filesystem=path.fs)
    return pq.read_table(path, columns=columns, filters=filters)


def parquet_file(path) -> pq.ParquetFile:
    path = out_path(path)
    if is_remote(path):
        return pq.ParquetFile(path.path, filesystem=path.fs)
    return pq.ParquetFile(path)


def parquet_rows(path) -> int:
    return parquet_file(path).metadata.num_rows


def read_ipc_table(path) -> pa.Table:
    """An Arrow IPC file: memory-mapped when local, read in full from object storage."""
    path = out_path(path)
    if is_remote(path):
        with path.open("rb") as handle:
            return pa.ipc.open_file(pa.BufferReader(handle.read())).read_all()
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def file_stamp(path) -> list:
    """[size, modification stamp] of a file: what says it was rewritten."""
    path = out_path(path)
    if not is_remote(path):
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    info = path.fs.info(path.path)
    return [info.get("size"), str(info.get("ETag") or info.get("LastModified")
                                  or info.get("mtime") or "")]


_LOCAL_COPIES: dict[str, tuple[list, str]] = {}


def local_copy(path) -> str:
    """A local file with `path`'s content, for libraries that only open local files (fastText,
    numpy archives): the file itself, or a copy kept per process and fetched again when the
    object changes."""
    path = out_path(path)
    if not is_remote(path):
        return str(path)
    stamp = file_stamp(path)
    cached = _LOCAL_COPIES.get(str(path))
    if cached and cached[0] == stamp and os.path.exists(cached[1]):
        return cached[1]
    if cached:
        shutil.rmtree(os.path.dirname(cached[1]), ignore_errors=True)
    local = os.path.join(tempfile.mkdtemp(prefix="textmill-copy-"), path.name)
    path.fs.get_file(path.path, local)
    _LOCAL_COPIES[str(path)] = (stamp, local)
    return local


def load_npy(path, mmap_mode: str | None = None):
    """A .npy array in OUT: memory-mapped in place when local, else from a local copy."""
    import numpy as np

    return np.load(local_copy(path), mmap_mode=mmap_mode, allow_pickle=False)


def copy_file(source, target) -> None:
    """Copy one file within OUT: a hard link on a local disk, a server-side copy remotely."""
    source, target = out_path(source), out_path(target)
    if is_remote(target):
        target.fs.copy(source.path, target.path)
        return
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, target)
