"""`curate export-megatron OUT/tokens/SRC PREFIX`: token shards -> Megatron-LM .bin/.idx.

Megatron-LM's memory-mapped indexed dataset (MMIDIDX, version 1), little-endian:

    .idx  b"MMIDIDX\\x00\\x00"  magic (9 bytes)
          <Q version = 1
          <B dtype code (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32,
             8 uint16)
          <Q number of sequences  S
          <Q number of document boundaries  D (= S + 1: one sequence per document)
          int32[S] sequence sizes (tokens)
          int64[S] byte offset of each sequence in .bin
          int64[D] document index: sequence number where each document starts, then S
    .bin  every sequence's tokens back to back, in the dtype above

One textmill document (EOD included) is one sequence and one document. uint32 vocabularies
are written as int32, the widest integer code Megatron reads for tokens.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.atomic import atomic_path
from curation.shards import MANIFEST_NAME

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {np.dtype(np.uint16): 8, np.dtype(np.uint32): 4}
EXPORT_DTYPES = {np.dtype(np.uint16): np.dtype(np.uint16), np.dtype(np.uint32): np.dtype(np.int32)}


def _shard_arrays(path: Path, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document lengths) of one shard, read through a memory map."""
    reader = pa.ipc.open_file(pa.memory_map(str(path)))
    tokens, lengths = [], []
    for i in range(reader.num_record_batches):
        column = reader.get_batch(i).column("tokens")
        offsets = column.offsets.to_numpy()
        tokens.append(column.values.to_numpy()[offsets[0]:offsets[-1]].astype(dtype, copy=False))
        lengths.append(np.diff(offsets))
    return tokens, lengths


def export_megatron(tokens_source_dir: Path, prefix: Path | str) -> tuple[Path, Path]:
    """Write PREFIX.bin and PREFIX.idx from one source's token shards; return their paths."""
    source_dir = Path(tokens_source_dir)
    manifest_path = source_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: no token manifest (run `curate run` first)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    dtype = np.dtype(manifest["dtype"])
    out_dtype = EXPORT_DTYPES[dtype]
    bin_path, idx_path = Path(f"{prefix}.bin"), Path(f"{prefix}.idx")
    sizes = []
    with atomic_path(bin_path) as tmp, open(tmp, "wb") as sink:
        for shard in manifest["shards"]:
            tokens, lengths = _shard_arrays(source_dir / shard["file"], out_dtype)
            for block in tokens:
                sink.write(block.tobytes())
            sizes += lengths
    sizes = np.concatenate(sizes).astype(np.int32) if sizes else np.zeros(0, np.int32)
    pointers = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1].astype(np.int64) * out_dtype.itemsize, out=pointers[1:])
    document_index = np.arange(len(sizes) + 1, dtype=np.int64)
    with atomic_path(idx_path) as tmp, open(tmp, "wb") as sink:
        sink.write(MAGIC)
        sink.write(struct.pack("<Q", VERSION))
        sink.write(struct.pack("<B", DTYPE_CODES[dtype]))
        sink.write(struct.pack("<Q", len(sizes)))
        sink.write(struct.pack("<Q", len(document_index)))
        sink.write(sizes.astype("<i4").tobytes())
        sink.write(pointers.astype("<i8").tobytes())
        sink.write(document_index.astype("<i8").tobytes())
    return bin_path, idx_path
