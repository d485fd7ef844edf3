"""Token shards on disk: the Arrow IPC file layout and the manifest beside it (DESIGN.md).

One row per document: `id` (string) and `tokens` (list<uint16|uint32>). Each shard is
written as a single record batch, so its flat values buffer is the source's token stream
for that shard and the list offsets are the document index: a reader memory-maps the file
and slices tokens without copying.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.atomic import atomic_path, write_json_atomic
from curation.storage import out_path

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "textmill-tokens/1"
SHARD_PATTERN = "shard-{:05d}.arrow"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (vocab <= 65536), else uint32: half the bytes for GPT-2 vocabs."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_schema(dtype: np.dtype) -> pa.Schema:
    return pa.schema([("id", pa.string()), ("tokens", pa.list_(pa.from_numpy_dtype(dtype)))])


def tokens_table(ids: list[str] | pa.Array, flat: np.ndarray, offsets: np.ndarray) -> pa.Table:
    """A shard table from document ids, the flat token stream and its int32 list offsets."""
    tokens = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat))
    ids = ids if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
    return pa.Table.from_arrays([ids, tokens],
                                schema=shard_schema(flat.dtype))


def write_ipc_atomic(table: pa.Table, final: Path) -> None:
    """Write `table` as one record batch in the Arrow IPC file format (memory-mappable)."""
    batch = table.combine_chunks().to_batches()
    with atomic_path(final) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            for b in batch:
                writer.write_batch(b)


def file_sha256(path: Path, chunk: int = 8 * 2**20) -> str:
    digest = hashlib.sha256()
    with out_path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(source_dir: Path, manifest: dict) -> Path:
    path = out_path(source_dir) / MANIFEST_NAME
    write_json_atomic(path, manifest)
    return path
