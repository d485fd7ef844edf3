"""Where a source's token shards begin and end, and the worker task that writes one.

A source's documents, in canonical order, form one token stream; a document belongs to
shard window `w = start // shard_tokens`, where `start` is the position of its first token
in that stream. Shards are the non-empty windows, numbered in order: about `shard_tokens`
tokens each (the first k shards together hold at least k x shard_tokens), cut at document
boundaries, a function of the documents' lengths only: not of partitioning, worker count
or a resumed run. The driver needs nothing but each partition's token count (to place it
in the stream) and the windows each partition's documents start in; the workers read the
encoded partitions and write the shards.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.shards import file_sha256, tokens_table, write_ipc_atomic
from curation.storage import file_stamp, out_path, read_ipc_table


def read_part(path: str) -> pa.Table:
    """An encoded partition (Arrow IPC file: id, tokens), memory-mapped when local."""
    return read_ipc_table(path)


def part_counts(path: str) -> tuple[int, int]:
    """(documents, tokens) of an encoded partition."""
    tokens = read_part(path).column("tokens").combine_chunks()
    return len(tokens), int(tokens.offsets[-1].as_py()) - int(tokens.offsets[0].as_py())


def part_windows(path: str, first_token: int, shard_tokens: int) -> list[tuple[int, int, int]]:
    """(window, first row, end row) of every window a partition's documents start in,
    given the position of the partition's first token in its source's stream."""
    offsets = read_part(path).column("tokens").combine_chunks().offsets.to_numpy()
    starts = first_token + offsets[:-1].astype(np.int64) - int(offsets[0])
    windows = starts // shard_tokens
    if len(windows) == 0:
        return []
    cuts = np.flatnonzero(np.diff(windows)) + 1
    firsts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(windows)]])
    return [(int(windows[a]), int(a), int(b)) for a, b in zip(firsts, ends, strict=True)]


def plan_shards(windows_per_part: list[list[tuple[int, int, int]]],
                parts: list[str]) -> list[list[tuple[str, int, int]]]:
    """Per shard, in order: its pieces (encoded partition, first row, end row)."""
    pieces: dict[int, list[tuple[str, int, int]]] = {}
    for part, windows in zip(parts, windows_per_part, strict=True):
        for window, first, end in windows:
            pieces.setdefault(window, []).append((part, first, end))
    return [pieces[w] for w in sorted(pieces)]


def write_shard(pieces: list[tuple[str, int, int]], final: str) -> dict:
    """Worker task: one shard from slices of encoded partitions; its manifest entry.

    Built from fresh buffers (concatenated ids, zero-based offsets), so the bytes do not
    depend on how the slices were cut.
    """
    ids, flats, lengths = [], [], []
    for path, first, end in pieces:
        tokens = read_part(path).slice(first, end - first)
        column = tokens.column("tokens").combine_chunks()
        offsets = column.offsets.to_numpy()
        ids.append(tokens.column("id").combine_chunks())
        flats.append(column.values.to_numpy()[offsets[0]:offsets[-1]])
        lengths.append(np.diff(offsets))
    flat = np.concatenate(flats)
    offsets = np.zeros(sum(len(n) for n in lengths) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError(f"{final}: a shard would hold >= 2**31 tokens; lower shard_tokens")
    path = out_path(final)
    write_ipc_atomic(tokens_table(pa.concat_arrays(ids), flat, offsets.astype(np.int32)), path)
    return {"file": path.name, "documents": len(offsets) - 1, "tokens": int(offsets[-1]),
            "bytes": file_stamp(path)[0], "sha256": file_sha256(path)}
