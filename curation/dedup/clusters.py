"""Fuzzy dedup's global step without DataFrame shuffles, for graphs that fit a worker.

Bucket rows are read straight from the per-partition signature files by a few tasks, each
owning a range of the bucket hash space (one read, no shuffle); their anchor edges go to
one task, which keeps the distinct candidate pairs and their nodes. Each input partition
then recomputes the shingle sets of its own candidate documents, held in worker memory,
and one task verifies every pair against both sets, labels the components and picks the
keepers. Only the signature files (for resume) and the decisions (for `run`) touch disk.
Every choice is made on ids, so the result does not depend on the partitioning, the
number of bucket tasks or of workers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from curation.atomic import atomic_write_parquet
from curation.dedup.components import labels_in_memory
from curation.dedup.keeper import keeper_first
from curation.dedup.lsh import bucket_anchor_edges
from curation.dedup.minhash import shingle_hashes
from curation.dedup.verify import decode_sets, encode_sets, indexed_pair_jaccard
from curation.storage import out_path, read_parquet_table

ROW_BITS = 32  # doc key = partition << 32 | row
_INT64 = 1 << 63


def doc_keys(part: int, n: int) -> np.ndarray:
    return (np.int64(part) << np.int64(ROW_BITS)) | np.arange(n, dtype=np.int64)


def bucket_ranges(count: int) -> list[tuple[int | None, int | None]]:
    """`count` half-open ranges [lo, hi) covering all int64 bucket hashes (None: open end)."""
    cuts = [-_INT64 + (k << 64) // count for k in range(count + 1)]
    return [(None if k == 0 else cuts[k], None if k == count - 1 else cuts[k + 1])
            for k in range(count)]


def bucket_range_edges(paths: list[str], lo: int | None, hi: int | None) -> pd.DataFrame:
    """Anchor edges (lo, hi) of every bucket whose hash lies in [lo, hi), read from the
    signature files (sorted by bucket, so row-group statistics skip the rest)."""
    filters = [f for f in (None if lo is None else ("bucket", ">=", lo),
                           None if hi is None else ("bucket", "<", hi)) if f is not None]
    tables = [read_parquet_table(p, filters=filters or None) for p in paths]
    rows = pa.concat_tables(tables) if tables else pa.table(
        {c: pa.array([], pa.int64()) for c in ("bucket", "doc", "rank")})
    return bucket_anchor_edges(rows.to_pandas())


def plan_candidates(*edge_frames: pd.DataFrame) -> dict:
    """The distinct candidate pairs (sorted) and their nodes (sorted doc keys)."""
    edges = pd.concat(edge_frames, ignore_index=True) if edge_frames else pd.DataFrame(
        {"lo": np.empty(0, np.int64), "hi": np.empty(0, np.int64)})
    edges = edges.drop_duplicates().sort_values(["lo", "hi"], ignore_index=True)
    lo, hi = edges["lo"].to_numpy(np.int64), edges["hi"].to_numpy(np.int64)
    return {"lo": lo, "hi": hi, "nodes": np.unique(np.concatenate([lo, hi]))}


def plan_summary(plan: dict) -> tuple[int, list[int]]:
    """What the driver needs from the plan: pairs, and the partitions holding nodes."""
    return len(plan["lo"]), np.unique(plan["nodes"] >> ROW_BITS).tolist()


def candidate_table(docs: pd.DataFrame, part: int, plan: dict, ngram: int, shingle: str,
                    with_sets: bool) -> pa.Table:
    """doc, id, source and (for verification) the shingle set of this partition's nodes."""
    nodes = plan["nodes"]
    first, last = np.searchsorted(nodes, [np.int64(part) << ROW_BITS,
                                          np.int64(part + 1) << ROW_BITS])
    keys = nodes[first:last]
    rows = keys & ((1 << ROW_BITS) - 1)
    if len(rows) and rows.max() >= len(docs):
        raise ValueError(f"fuzzy_dedup: partition {part} has {len(docs)} rows but its "
                         f"signatures name row {rows.max()}: was the input changed?")
    chosen = docs.iloc[rows]
    table = {"doc": pa.array(keys, pa.int64()),
             "id": pa.array(chosen["id"].astype(str).to_numpy(), pa.string()),
             "source": pa.array(chosen["source"].astype(str).to_numpy(), pa.string())}
    if with_sets:
        table["shingles"] = encode_sets(shingle_hashes(chosen["text"], ngram, shingle))
    return pa.table(table)


def table_bytes(table: pa.Table) -> int:
    return table.nbytes


def choose_keepers(members: pd.DataFrame, priorities: dict[str, int]) -> pd.DataFrame:
    """Per component (label): the keeper (highest priority, then smallest id) and its name.

    All members of a component must be in `members`. The component is named by its
    smallest id, so the name does not depend on doc keys.
    """
    unknown = sorted(set(members["source"]) - set(priorities))
    if unknown:
        raise ValueError(f"fuzzy_dedup: documents from sources not in the spec: {unknown}")
    ordered = keeper_first(members, ["label"], members["source"].map(priorities))
    grouped = ordered.groupby("label", sort=False)["id"]
    keeper = grouped.transform("first")
    return pd.DataFrame({
        "part": (ordered["doc"].to_numpy() >> ROW_BITS).astype("int64"),
        "row": (ordered["doc"].to_numpy() & ((1 << ROW_BITS) - 1)).astype("int64"),
        "id": ordered["id"].to_numpy(),
        "component": grouped.transform("min").to_numpy(),
        "keeper": keeper.to_numpy(),
        "cluster_size": grouped.transform("size").astype("int64").to_numpy(),
        "keep": (ordered["id"] == keeper).to_numpy() & ~ordered.duplicated(["label", "id"])
        .to_numpy(),
    })


def decide_in_memory(plan: dict, tables: list[pa.Table], threshold: float, verify: bool,
                     priorities: dict[str, int], decisions_dir: str) -> dict:
    """Verify every candidate pair, label components, choose keepers and write the
    decisions of each partition to decisions_dir/part=P/; returns the counts."""
    nodes = pa.concat_tables(tables) if tables else None
    keys = nodes.column("doc").to_numpy() if nodes is not None else np.empty(0, np.int64)
    lo, hi = plan["lo"], plan["hi"]
    left, right = np.searchsorted(keys, lo), np.searchsorted(keys, hi)
    verified = np.ones(len(lo), dtype=bool)
    if verify and len(lo):
        sets = decode_sets(nodes.column("shingles"))
        verified = indexed_pair_jaccard(sets, left, right) >= threshold
    counts = {"candidate_pairs": int(len(lo)), "verified_pairs": int(verified.sum())}
    if not verified.any():
        return {**counts, "removed": 0}
    labels = labels_in_memory(pd.DataFrame({"lo": lo[verified], "hi": hi[verified]}))
    at = np.searchsorted(keys, labels["doc"].to_numpy())
    members = labels.assign(id=nodes.column("id").to_numpy(zero_copy_only=False)[at],
                            source=nodes.column("source").to_numpy(zero_copy_only=False)[at])
    decisions = choose_keepers(members, priorities)
    for part, group in decisions.groupby("part", sort=True):
        atomic_write_parquet(group.drop(columns="part").reset_index(drop=True),
                             out_path(decisions_dir) / f"part={part}" / "part-0.parquet")
    return {**counts, "removed": int((~decisions["keep"]).sum())}
