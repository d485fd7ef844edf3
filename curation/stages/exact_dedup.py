"""Exact deduplication across all sources: one copy of each text survives.

The global step hashes every document (128-bit BLAKE2b of its normalised text) into a
keys file per partition, sorted by hash; a few tasks, each owning a range of the hash
space, read their rows from every file (row-group statistics skip the rest), so equal
texts meet without a shuffle, and pick the keeper: highest source priority, then the
smallest id. Decisions are written partitioned by input partition, so each worker reads
only its own.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.atomic import atomic_path, atomic_write_parquet, write_json_atomic
from curation.dedup.keeper import keeper_first
from curation.documents import REMOVED, ledger_rows
from curation.stages.base import ScopedConfig, Stage, StageContext, StageOutput
from curation.storage import out_path, parquet_rows, read_parquet_table, remove_tree

DONE_MARKER = "decisions.done.json"
KEYS_PER_TASK = 4_000_000  # key rows one duplicate-finding task reads
_ROW_GROUP = 1 << 16  # keys-file row groups: small enough for range reads to skip


class ExactDedupConfig(ScopedConfig):
    # Compare texts after lower-casing and collapsing whitespace (off: byte-exact).
    ignore_case_and_space: bool = False


def text_hashes(texts: pd.Series, ignore_case_and_space: bool) -> tuple[np.ndarray, np.ndarray]:
    """Two uint64 halves of a 128-bit hash per text (128 bits: no collisions at 1e12 docs)."""
    if ignore_case_and_space:
        texts = texts.str.lower().str.split().str.join(" ")
    digests = b"".join(
        hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts
    )
    halves = np.frombuffer(digests, dtype="<u8").reshape(-1, 2)
    return halves[:, 0].copy(), halves[:, 1].copy()


def keys_path(keys_dir: Path | str, part: int) -> Path:
    return out_path(keys_dir) / f"part-{part:05d}.parquet"


def _hash_partition(docs: pd.DataFrame, part: int, priorities: dict[str, int],
                    ignore: bool, keys_dir: str) -> int:
    hi, lo = text_hashes(docs["text"], ignore)
    order = np.argsort(hi)
    keys = pa.table({
        "h_hi": hi[order], "h_lo": lo[order],
        "id": pa.array(docs["id"].to_numpy()[order], pa.string()),
        "priority": docs["source"].map(priorities).astype("int64").to_numpy()[order],
        "part": np.full(len(docs), part, dtype="int64"),
    })
    with atomic_path(keys_path(keys_dir, part)) as tmp:
        pq.write_table(keys, tmp, compression="zstd", row_group_size=_ROW_GROUP)
    return len(keys)


def hash_ranges(count: int) -> list:
    """Parquet filters splitting the uint64 `h_hi` space into `count` half-open ranges."""
    cuts = [pa.scalar((k << 64) // count, pa.uint64()) for k in range(count)]
    field = pc.field("h_hi")
    ranges = []
    for k in range(count):
        bounds = ([field >= cuts[k]] if k else []) + ([field < cuts[k + 1]] if k < count - 1
                                                      else [])
        ranges.append(functools.reduce(operator.and_, bounds) if bounds else None)
    return ranges


def range_duplicates(paths: list[str], filters, decisions_dir: str,
                     task: int) -> int:
    """The duplicates whose hash lies in one range, written under decisions_dir/part=P/."""
    tables = [read_parquet_table(p, filters=filters) for p in paths]
    losers = pick_duplicates(pa.concat_tables(tables).to_pandas())
    for part, group in losers.groupby("part", sort=True):
        atomic_write_parquet(group.drop(columns="part").reset_index(drop=True),
                             out_path(decisions_dir) / f"part={part}" / f"range-{task:04d}.parquet")
    return len(losers)


def pick_duplicates(keys: pd.DataFrame) -> pd.DataFrame:
    """For each group of equal hashes, every row but the keeper, with the keeper's id."""
    ordered = keeper_first(keys, ["h_hi", "h_lo"], keys["priority"])
    group_start = ~ordered.duplicated(["h_hi", "h_lo"], keep="first")
    keeper = ordered["id"].where(group_start).ffill()
    size = ordered.groupby(["h_hi", "h_lo"], sort=False)["id"].transform("size")
    losers = ordered.assign(keeper=keeper, copies=size)[~group_start.to_numpy()]
    return losers[["id", "part", "keeper", "copies"]].reset_index(drop=True)


class ExactDedupStage(Stage):
    name = "exact_dedup"
    config_class = ExactDedupConfig

    def prepare(self, ctx: StageContext) -> None:
        if (ctx.workdir / DONE_MARKER).exists():
            return
        keys_dir = ctx.workdir / "keys"
        priorities = {s.name: s.priority for s in ctx.spec.sources}
        # A keys file is written atomically: one that exists is a finished partition of an
        # interrupted run, and is not hashed again.
        counts = ctx.map(_hash_partition, priorities, self.config.ignore_case_and_space,
                         str(keys_dir), columns=["id", "source", "text"], desc="exact_dedup: hash",
                         skip=lambda part: keys_path(keys_dir, part).exists())
        total = sum(parquet_rows(keys_path(keys_dir, part)) if count is None
                    else count for part, count in enumerate(counts))
        decisions_dir = ctx.workdir / "decisions"
        remove_tree(decisions_dir)
        if total:
            client = ctx.client
            paths = [str(keys_path(keys_dir, part)) for part in range(len(counts))]
            workers = max(1, len(client.scheduler_info().get("workers", {})))
            tasks = max(workers, -(-total // KEYS_PER_TASK))
            client.gather([client.submit(range_duplicates, paths, filters, str(decisions_dir),
                                         k, pure=False)
                           for k, filters in enumerate(hash_ranges(tasks))])
        write_json_atomic(ctx.workdir / DONE_MARKER, {"documents": int(total)})

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        decisions = read_part_decisions(workdir / "decisions", part)
        if decisions.empty:
            return StageOutput(kept=docs, ledger=ledger_rows(docs.iloc[:0], self.name, REMOVED, ""))
        decisions = decisions.set_index("id")
        is_dup = docs["id"].isin(decisions.index).to_numpy()
        removed = docs[is_dup]
        found = decisions.loc[removed["id"]]
        detail = [{"keeper": k, "copies": int(c)}
                  for k, c in zip(found["keeper"], found["copies"], strict=True)]
        ledger = ledger_rows(removed, self.name, REMOVED, "exact_duplicate", detail)
        return StageOutput(kept=docs[~is_dup], ledger=ledger)


def read_part_decisions(decisions_dir: Path, part: int) -> pd.DataFrame:
    """The decisions of one input partition (hive folder `part=K`), or an empty frame."""
    folder = decisions_dir / f"part={part}"
    if not folder.exists():
        return pd.DataFrame({"id": pd.Series(dtype=str)})
    return read_parquet_table(folder).to_pandas()
