"""Exact deduplication across all sources: one copy of each text survives.

The global step hashes every document (128-bit BLAKE2b of its normalised text), shuffles
the hashes on Dask so equal texts meet in one partition, and picks the keeper: highest
source priority, then the smallest id. Decisions are written partitioned by input
partition, so each worker reads only its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from curation.atomic import atomic_write_parquet, write_json_atomic
from curation.dedup.keeper import keeper_first
from curation.stages.base import Decided, Removed, ScopedConfig, Stage, StageContext
from curation.storage import dask_storage_options, out_path, parquet_rows, read_parquet_table

DONE_MARKER = "decisions.done.json"


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
    keys = pd.DataFrame({
        "h_hi": hi, "h_lo": lo, "id": docs["id"].to_numpy(),
        "priority": docs["source"].map(priorities).astype("int64").to_numpy(),
        "part": np.full(len(docs), part, dtype="int64"),
    })
    atomic_write_parquet(keys, keys_path(keys_dir, part))
    return len(keys)


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
        import dask.dataframe as dd

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
        if total:
            options = dask_storage_options(keys_dir)
            keys = dd.read_parquet(str(keys_dir), storage_options=options)
            nparts = max(1, keys.npartitions)
            meta = pd.DataFrame({"id": pd.Series(dtype=str), "part": pd.Series(dtype="int64"),
                                 "keeper": pd.Series(dtype=str),
                                 "copies": pd.Series(dtype="int64")})
            losers = keys.shuffle(on="h_hi", npartitions=nparts).map_partitions(
                pick_duplicates, meta=meta)
            losers.to_parquet(str(decisions_dir), partition_on=["part"], write_index=False,
                              overwrite=True, storage_options=options)
        write_json_atomic(ctx.workdir / DONE_MARKER, {"documents": int(total)})

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided:
        decisions = read_part_decisions(workdir / "decisions", part)
        if decisions.empty:
            return Decided(docs)
        decisions = decisions.set_index("id")
        is_dup = docs["id"].isin(decisions.index).to_numpy()
        removed = docs[is_dup]
        found = decisions.loc[removed["id"]]
        detail = [{"keeper": k, "copies": int(c)}
                  for k, c in zip(found["keeper"], found["copies"], strict=True)]
        return Decided(docs[~is_dup], [Removed(removed, "exact_duplicate", detail)])


def read_part_decisions(decisions_dir: Path, part: int) -> pd.DataFrame:
    """The decisions of one input partition (hive folder `part=K`), or an empty frame."""
    folder = decisions_dir / f"part={part}"
    if not folder.exists():
        return pd.DataFrame({"id": pd.Series(dtype=str)})
    return read_parquet_table(folder).to_pandas()
