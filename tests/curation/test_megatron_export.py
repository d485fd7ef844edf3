"""Megatron-LM export: the .bin/.idx files read back by a reader written from the format doc."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from curation.megatron_export import export_megatron
from curation.shards import file_sha256, token_dtype, tokens_table, write_ipc_atomic, write_manifest

# Megatron-LM's dtype codes for MMapIndexedDataset, as documented there.
MEGATRON_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64,
                   6: np.float64, 7: np.float32, 8: np.uint16}


def read_megatron(prefix: Path) -> tuple[int, list[np.ndarray], np.ndarray]:
    """An independent reader: (dtype code, documents, document index) of PREFIX.bin/.idx."""
    idx = Path(f"{prefix}.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack_from("<Q", idx, 9)
    (code,) = struct.unpack_from("<B", idx, 17)
    sequences, documents = struct.unpack_from("<QQ", idx, 18)
    assert version == 1
    offset = 34
    sizes = np.frombuffer(idx, "<i4", sequences, offset)
    offset += 4 * sequences
    pointers = np.frombuffer(idx, "<i8", sequences, offset)
    offset += 8 * sequences
    doc_index = np.frombuffer(idx, "<i8", documents, offset)
    assert offset + 8 * documents == len(idx)
    data = Path(f"{prefix}.bin").read_bytes()
    dtype = np.dtype(MEGATRON_DTYPES[code])
    docs = [np.frombuffer(data, dtype, int(n), int(p)) for n, p in zip(sizes, pointers,
                                                                     strict=True)]
    assert sum(len(d) for d in docs) * dtype.itemsize == len(data)
    return code, docs, doc_index


def write_source(source_dir: Path, docs: list[list[int]], vocab_size: int) -> None:
    dtype = token_dtype(vocab_size)
    shards = []
    for s, chunk in enumerate([docs[:3], docs[3:]]):
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in chunk])]).astype(np.int32)
        path = source_dir / f"shard-{s:05d}.arrow"
        write_ipc_atomic(tokens_table([str(i) for i in range(len(chunk))],
                                      np.concatenate(chunk).astype(dtype), offsets), path)
        shards.append({"file": path.name, "documents": len(chunk),
                       "tokens": int(offsets[-1]), "sha256": file_sha256(path)})
    write_manifest(source_dir, {"dtype": dtype.name, "eod_id": 0, "vocab_size": vocab_size,
                                "shards": shards})


@pytest.mark.parametrize("vocab_size, code", [(50257, 8), (100_000, 4)])
def test_export_reads_back_with_an_independent_reader(tmp_path, vocab_size, code):
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(1, vocab_size, size=n), 0).tolist()
            for n in [5, 1, 17, 3, 250]]
    write_source(tmp_path / "src", docs, vocab_size)
    bin_path, idx_path = export_megatron(tmp_path / "src", tmp_path / "out" / "src_text_document")
    assert bin_path.name == "src_text_document.bin" and idx_path.exists()
    found_code, found, doc_index = read_megatron(tmp_path / "out" / "src_text_document")
    assert found_code == code
    assert [d.tolist() for d in found] == docs
    assert doc_index.tolist() == list(range(len(docs) + 1))


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere/manifest.json"):
        export_megatron(tmp_path / "nowhere", tmp_path / "x")
