"""One source's token shards, memory-mapped and checked against their manifest.

Nothing is read whole: each shard is opened with `pa.memory_map`, and the token stream and
list offsets of each record batch are zero-copy numpy views of the mapped file, so resident
memory is what the trainer touches, not what the corpus holds.

Checks on every open (cheap): schema, dtype, document and token counts, file size against
`manifest.json`. The sha256 of every shard (a full read of the data) is checked only when
`verify_sha=True`: the dataset builder does that once, when it builds indices that are not
yet cached (the cache key includes every shard's sha256), not on every trainer start.

Memory: the process's private (anonymous) memory does not grow with the corpus. Pages of
the shards that reads touch count as file-backed resident memory; they are the kernel's
page cache, shared between ranks on a node and dropped under memory pressure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.shards import MANIFEST_NAME, file_sha256


class ShardError(ValueError):
    """A token shard or manifest that does not match the contract; the message names the file."""


def read_manifest(source_dir: Path) -> dict:
    path = Path(source_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: no token manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        for key in ("dtype", "eod_id", "vocab_size", "shards"):
            manifest[key]
    except (json.JSONDecodeError, KeyError) as err:
        raise ShardError(f"{path}: not a token manifest ({err!r})") from err
    return manifest


class SourceShards:
    """The documents of one source across its shards, addressed by a global document number."""

    def __init__(self, source_dir: Path, verify_sha: bool = False):
        self.dir = Path(source_dir)
        self.manifest = read_manifest(self.dir)
        self.dtype = np.dtype(self.manifest["dtype"])
        self.eod_id = int(self.manifest["eod_id"])
        self.vocab_size = int(self.manifest["vocab_size"])
        expected = pa.schema([("id", pa.string()),
                              ("tokens", pa.list_(pa.from_numpy_dtype(self.dtype)))])
        self._tokens: list[np.ndarray] = []  # per record batch: the flat token stream
        self._offsets: list[np.ndarray] = []  # per record batch: int32 document offsets
        first_docs = [0]
        for shard in self.manifest["shards"]:
            path = self.dir / shard["file"]
            self._open_shard(path, shard, expected, verify_sha, first_docs)
        self._first_doc = np.asarray(first_docs, dtype=np.int64)
        self.num_documents = int(self._first_doc[-1])
        if self.num_documents == 0:
            raise ShardError(f"{self.dir / MANIFEST_NAME}: source has no documents (no tokens)")

    def _open_shard(self, path: Path, shard: dict, expected: pa.Schema, verify_sha: bool,
                    first_docs: list[int]) -> None:
        if not path.is_file():
            raise ShardError(f"{path}: shard listed in the manifest is missing")
        if "bytes" in shard and path.stat().st_size != shard["bytes"]:
            raise ShardError(f"{path}: size {path.stat().st_size} != manifest {shard['bytes']}")
        if verify_sha and file_sha256(path) != shard["sha256"]:
            raise ShardError(f"{path}: sha256 does not match the manifest (corrupt or replaced)")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
        except pa.ArrowInvalid as err:
            raise ShardError(f"{path}: not an Arrow IPC file ({err})") from err
        if not reader.schema.equals(expected):
            raise ShardError(f"{path}: schema {reader.schema.types} != expected "
                             f"{expected.types} (manifest dtype {self.dtype.name})")
        documents = tokens = 0
        for i in range(reader.num_record_batches):
            column = reader.get_batch(i).column("tokens")
            if column.null_count or column.values.null_count:
                raise ShardError(f"{path}: null documents or tokens in batch {i}")
            offsets = column.offsets.to_numpy()
            self._offsets.append(offsets)
            self._tokens.append(column.values.to_numpy())
            documents += len(column)
            tokens += int(offsets[-1] - offsets[0])
            first_docs.append(first_docs[-1] + len(column))
        if (documents, tokens) != (shard["documents"], shard["tokens"]):
            raise ShardError(f"{path}: {documents} documents / {tokens} tokens != manifest "
                             f"{shard['documents']} / {shard['tokens']}")

    def document_lengths(self) -> np.ndarray:
        """Tokens per document (EOD included), int64, in global document order."""
        return np.concatenate([np.diff(o).astype(np.int64) for o in self._offsets])

    def document(self, doc: int) -> np.ndarray:
        """A zero-copy view of one document's tokens."""
        batch = int(np.searchsorted(self._first_doc, doc, side="right")) - 1
        offsets = self._offsets[batch]
        local = doc - self._first_doc[batch]
        return self._tokens[batch][offsets[local]:offsets[local + 1]]

    @property
    def num_tokens(self) -> int:
        return int(sum(int(o[-1] - o[0]) for o in self._offsets))
