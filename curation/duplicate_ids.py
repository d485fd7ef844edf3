"""Unique ids after `read`: later copies of an id become ledger rows (or stop the run).

Ids from a source's `id_field` are the user's; nothing makes them unique, and two documents
with one id would break every later stage's bookkeeping (exact dedup keys on ids). The read
task writes one small keys file per partition (id, source, file, row, position); a Dask
shuffle by id brings every copy of an id into one partition, where the first copy — in
file order, then row — is kept and the others are written as decisions, partitioned by
the read partition they came from. Each partition with decisions is then rewritten
without its later copies, which go to their own ledger file. No set of ids ever lives in
the driver.

Resumable: decisions are written once (a marker records it), and applying them to a
partition is idempotent (a partition already shorter than its keys file is done).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from curation.atomic import atomic_write_parquet, write_json_atomic
from curation.documents import LEDGER_SCHEMA, REMOVED, ledger_rows
from curation.io import InputError
from curation.readers.records import READ_STAGE
from curation.stage_context import read_partition
from curation.stage_stats import partition_stats
from curation.storage import dask_storage_options, out_path, parquet_rows, read_parquet_table

KEYS_DIR = "id_keys"
DECISIONS_DIR = "duplicate_ids"
DONE_MARKER = "duplicate_ids.done.json"
REASON = "duplicate_id"
LEDGER_SUFFIX = "-duplicate_id.parquet"
# Keys per partition after the shuffle: ~50 MB of ids, few enough partitions that the
# shuffle's fixed cost per partition does not dominate a small corpus.
KEYS_PER_PARTITION = 1_000_000


class DuplicateIdError(InputError):
    """`read.on_duplicate_id: error` and two records share an id."""


def needs_check(spec) -> bool:
    """Default ids (<source>/<file>/<row>) are unique by construction; user ids are not."""
    return any(s.id_field is not None for s in spec.sources)


def write_keys(docs: pd.DataFrame, file_index: int, name: str, stage_dir) -> None:
    """One read partition's keys: what the shuffle needs to find and place every copy."""
    keys = pd.DataFrame({
        "id": docs["id"].astype(str).to_numpy(),
        "source": docs["source"].astype(str).to_numpy(),
        "file": np.full(len(docs), file_index, dtype="int64"),
        "row": docs["row"].to_numpy(dtype="int64"),
        "pos": np.arange(len(docs), dtype="int64"),
        "chunk": [name] * len(docs),
    })
    atomic_write_parquet(keys, out_path(stage_dir) / KEYS_DIR / name)


def later_copies(keys: pd.DataFrame) -> pd.DataFrame:
    """Every copy of an id but its first (file order, then row), with the first's place."""
    ordered = keys.sort_values(["id", "file", "row"], kind="stable")
    first = ~ordered.duplicated("id", keep="first")
    first_file = ordered["file"].where(first).ffill().astype("int64")
    first_row = ordered["row"].where(first).ffill().astype("int64")
    later = ordered.assign(first_file=first_file, first_row=first_row)[~first.to_numpy()]
    return later[["chunk", "pos", "id", "source", "file", "row", "first_file", "first_row"]] \
        .reset_index(drop=True)


def find_duplicates(stage_dir, client, documents: int) -> int:
    """Shuffle the keys by id on the cluster; write the later copies; return their count."""
    import dask.dataframe as dd

    stage_dir = out_path(stage_dir)
    marker = stage_dir / DONE_MARKER
    if marker.exists():
        return json.loads(marker.read_text())["duplicates"]
    options = dask_storage_options(stage_dir)
    keys = dd.read_parquet(str(stage_dir / KEYS_DIR), storage_options=options)
    meta = later_copies(keys._meta)
    nparts = max(1, -(-documents // KEYS_PER_PARTITION))
    later = keys.shuffle(on="id", npartitions=nparts).map_partitions(
        later_copies, meta=meta)
    later = later.persist()
    count = int(later.map_partitions(len).sum().compute())
    if count:
        later.to_parquet(str(stage_dir / DECISIONS_DIR), partition_on=["chunk"],
                         write_index=False, overwrite=True, storage_options=options)
    write_json_atomic(marker, {"duplicates": count})
    return count


def first_duplicate(stage_dir) -> pd.Series:
    """The earliest later copy (by file, then row): what an `error` run reports."""
    table = read_parquet_table(out_path(stage_dir) / DECISIONS_DIR,
                               columns=["id", "file", "row", "first_file", "first_row"])
    frame = table.to_pandas()
    return frame.sort_values(["file", "row"], kind="stable").iloc[0]


def duplicate_error(stage_dir, count: int, paths: list[str]) -> DuplicateIdError:
    row = first_duplicate(stage_dir)
    more = f" ({count - 1} more later copies)" if count > 1 else ""
    return DuplicateIdError(
        f"duplicate id {row['id']!r}: {paths[int(row['first_file'])]} row "
        f"{int(row['first_row'])} and {paths[int(row['file'])]} row {int(row['row'])}"
        f"{more}; set read.on_duplicate_id: ledger to keep the first copy and "
        f"ledger the rest")


def chunks_with_duplicates(stage_dir) -> list[str]:
    folder = out_path(stage_dir) / DECISIONS_DIR
    if not folder.exists():
        return []
    return sorted(p.name.split("=", 1)[1] for p in folder.glob("chunk=*"))


def apply_decisions_task(stage_dir: str, chunk: str, paths: list[str]) -> dict:
    """Drop one partition's later copies into their own ledger file; return its new stats."""
    stage_dir = out_path(stage_dir)
    decisions = read_parquet_table(stage_dir / DECISIONS_DIR / f"chunk={chunk}").to_pandas()
    decisions = decisions.sort_values("pos", kind="stable")
    detail = [{"first_file": paths[f], "first_row": int(r), "file": paths[g], "row": int(w)}
              for f, r, g, w in zip(decisions["first_file"], decisions["first_row"],
                                    decisions["file"], decisions["row"], strict=True)]
    dup_ledger = ledger_rows(decisions, READ_STAGE, REMOVED, REASON, detail)
    stem = chunk.removesuffix(".parquet")
    atomic_write_parquet(dup_ledger, stage_dir / "ledger" / f"{stem}{LEDGER_SUFFIX}",
                         schema=LEDGER_SCHEMA)
    data_path = stage_dir / "data" / chunk
    docs = read_partition(data_path)
    n_keys = parquet_rows(stage_dir / KEYS_DIR / chunk)
    if len(docs) == n_keys:  # not applied yet (an applied partition is shorter)
        keep = np.ones(len(docs), dtype=bool)
        keep[decisions["pos"].to_numpy()] = False
        docs = docs[keep].reset_index(drop=True)
        atomic_write_parquet(docs, data_path)
    ledger = pd.concat([read_partition(stage_dir / "ledger" / chunk), dup_ledger],
                       ignore_index=True)
    return partition_stats(chunk, None, docs, ledger)


def _apply_decisions_to(chunk: str, stage_dir: str, paths: list[str]) -> dict:
    return apply_decisions_task(stage_dir, chunk, paths)


def resolve_duplicate_ids(stage_dir, paths: list[str], on_duplicate: str, client,
                          documents: int) -> dict[str, dict]:
    """Find later copies of ids; stop (`error`) or ledger them. Returns the changed
    partitions' stats by partition name."""
    from curation.batches import map_batched

    count = find_duplicates(stage_dir, client, documents)
    if not count:
        return {}
    if on_duplicate == "error":
        raise duplicate_error(stage_dir, count, paths)
    chunks = chunks_with_duplicates(stage_dir)
    changed = map_batched(client, _apply_decisions_to, chunks, str(stage_dir), paths,
                          desc="read: duplicate ids", retries=2)
    return dict(zip(chunks, changed, strict=True))
