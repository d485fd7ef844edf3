"""Fuzzy dedup's global step as plain Dask tasks, each within the memory budget.

Bucket rows are read straight from the per-partition signature files by a few tasks, each
owning a range of the bucket hash space (one read, no shuffle); their anchor edges are
deduplicated into candidate pairs by groups of `lo` partitions. Each input partition then
recomputes the shingle sets of its own candidate documents, held in worker memory as
blocks; verification tasks each take the pairs of one (bin, bin) cell with the two bins'
blocks (routing.py sizes all of these from counts). One task then labels the components
of the verified edges and picks the keepers. Only the signature files (for resume) and
the decisions (for `run`) touch disk. Every choice is made on ids, so the result does not
depend on the partitioning, the number of tasks or of workers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from curation.atomic import atomic_write_parquet
from curation.dedup.components import labels_in_memory
from curation.dedup.keeper import keeper_first
from curation.dedup.lsh import bucket_anchor_edges
from curation.dedup.minhash import Shingles, shingle_hashes
from curation.dedup.routing import block_cuts, route_pairs
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


def lo_part_counts(edges: pd.DataFrame, parts: int) -> np.ndarray:
    """Edges per partition of their `lo` document."""
    return np.bincount(edges["lo"].to_numpy() >> ROW_BITS, minlength=parts)


def edges_with_lo_in(edges: pd.DataFrame, first_part: int, end_part: int) -> pd.DataFrame:
    keys = edges["lo"].to_numpy()
    inside = (keys >= first_part << ROW_BITS) & (keys < end_part << ROW_BITS)
    return edges[inside]


def plan_candidates(*edge_frames: pd.DataFrame) -> dict:
    """The distinct candidate pairs (sorted) and their nodes (sorted doc keys)."""
    edges = pd.concat(edge_frames, ignore_index=True) if edge_frames else pd.DataFrame(
        {"lo": np.empty(0, np.int64), "hi": np.empty(0, np.int64)})
    edges = edges.drop_duplicates().sort_values(["lo", "hi"], ignore_index=True)
    lo, hi = edges["lo"].to_numpy(np.int64), edges["hi"].to_numpy(np.int64)
    return {"lo": lo, "hi": hi, "nodes": np.unique(np.concatenate([lo, hi]))}


def plan_summary(plan: dict) -> tuple[int, list[int]]:
    """What the driver needs from a plan: its pairs, and the partitions holding its nodes."""
    return len(plan["lo"]), np.unique(plan["nodes"] >> ROW_BITS).tolist()


def plan_nodes(plan: dict) -> np.ndarray:
    return plan["nodes"]


def plan_pairs(plan: dict) -> pd.DataFrame:
    return pd.DataFrame({"lo": plan["lo"], "hi": plan["hi"]})


def candidate_sets(docs: pd.DataFrame, part: int, node_arrays: list[np.ndarray], ngram: int,
                   shingle: str, with_sets: bool, max_block_bytes: int) -> dict:
    """This partition's candidate documents: `meta` (doc, id, source) and `blocks` of
    (doc, shingles) in doc order, each block's sets within `max_block_bytes` (a single
    document's set may be larger; it is a block of its own)."""
    start, end = np.int64(part) << ROW_BITS, np.int64(part + 1) << ROW_BITS
    keys = np.unique(np.concatenate(
        [nodes[np.searchsorted(nodes, start):np.searchsorted(nodes, end)]
         for nodes in node_arrays] or [np.empty(0, np.int64)]))
    rows = keys & ((1 << ROW_BITS) - 1)
    if len(rows) and rows.max() >= len(docs):
        raise ValueError(f"fuzzy_dedup: partition {part} has {len(docs)} rows but its "
                         f"signatures name row {rows.max()}: was the input changed?")
    chosen = docs.iloc[rows]
    meta = pa.table({"doc": pa.array(keys, pa.int64()),
                     "id": pa.array(chosen["id"].astype(str).to_numpy(), pa.string()),
                     "source": pa.array(chosen["source"].astype(str).to_numpy(), pa.string())})
    if not with_sets or not len(keys):
        return {"meta": meta, "blocks": [], "block_bytes": []}
    encoded = encode_sets(shingle_hashes(chosen["text"], ngram, shingle))
    sets = pa.table({"doc": pa.array(keys, pa.int64()), "shingles": encoded})
    # doc key and offset, plus each set's bytes
    row_bytes = 16 + np.diff(np.frombuffer(encoded.buffers()[1], np.int64, len(keys) + 1))
    cuts = [*block_cuts(row_bytes, max_block_bytes), len(keys)]
    spans = list(zip(cuts[:-1], cuts[1:], strict=True))
    # A block is its own compact table (`take` copies), so moving it moves only its rows.
    blocks = [sets] if len(spans) == 1 else [sets.take(np.arange(a, b)) for a, b in spans]
    return {"meta": meta, "blocks": blocks,
            "block_bytes": [int(row_bytes[a:b].sum()) for a, b in spans]}


def candidates_summary(candidates: dict) -> dict:
    """Sizes the driver plans with: meta bytes, and each block's first doc key and bytes."""
    return {"meta_bytes": candidates["meta"].nbytes,
            "blocks": [(int(b.column("doc")[0].as_py()), size) for b, size in
                       zip(candidates["blocks"], candidates["block_bytes"], strict=True)]}


def candidates_meta(candidates: dict) -> pa.Table:
    return candidates["meta"]


def candidates_block(candidates: dict, index: int) -> pa.Table:
    return candidates["blocks"][index]


def route(plan: dict, bin_keys: list[int], max_pairs: int) -> dict:
    return route_pairs(plan["lo"], plan["hi"], np.asarray(bin_keys, np.int64), max_pairs)


def route_keys(routed: dict) -> list[tuple[int, int, int]]:
    return sorted(routed)


def routed_cell(routed: dict, key: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    return routed[key]


def _joined_sets(blocks: tuple[pa.Table, ...]) -> tuple[np.ndarray, Shingles]:
    """Doc keys (sorted) and shingle sets of blocks given in doc-key order."""
    keys = np.concatenate([b.column("doc").to_numpy() for b in blocks])
    if len(keys) > 1 and (np.diff(keys) <= 0).any():
        raise ValueError("fuzzy_dedup: verification blocks are not in doc-key order")
    parts = [decode_sets(b.column("shingles")) for b in blocks]
    sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return keys, Shingles(np.concatenate([p.hashes for p in parts]), offsets)


def verify_pairs(pairs: tuple[np.ndarray, np.ndarray], threshold: float,
                 *blocks: pa.Table) -> pd.DataFrame:
    """The pairs whose shingle sets (both in `blocks`) have Jaccard >= threshold."""
    lo, hi = pairs
    keys, sets = _joined_sets(blocks)
    left, right = np.searchsorted(keys, lo), np.searchsorted(keys, hi)
    if (left >= len(keys)).any() or (right >= len(keys)).any() or \
            (keys[left] != lo).any() or (keys[right] != hi).any():
        raise ValueError("fuzzy_dedup: a verification task lacks a candidate's shingle set")
    verified = indexed_pair_jaccard(sets, left, right) >= threshold
    return pd.DataFrame({"lo": lo[verified], "hi": hi[verified]})


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


def decide_keepers(verified: list[pd.DataFrame], metas: list[pa.Table],
                   priorities: dict[str, int], decisions_dir: str) -> dict:
    """Components of the verified edges and their keepers, in one task; writes the
    decisions of each partition to decisions_dir/part=P/ and returns the counts."""
    edges = pd.concat(verified, ignore_index=True) if verified else pd.DataFrame(
        {"lo": np.empty(0, np.int64), "hi": np.empty(0, np.int64)})
    counts = {"verified_pairs": len(edges)}
    if edges.empty:
        return {**counts, "removed": 0}
    labels = labels_in_memory(edges)
    nodes = pa.concat_tables(metas)
    keys = nodes.column("doc").to_numpy()
    at = np.searchsorted(keys, labels["doc"].to_numpy())
    members = labels.assign(id=nodes.column("id").to_numpy(zero_copy_only=False)[at],
                            source=nodes.column("source").to_numpy(zero_copy_only=False)[at])
    decisions = choose_keepers(members, priorities)
    for part, group in decisions.groupby("part", sort=True):
        atomic_write_parquet(group.drop(columns="part").reset_index(drop=True),
                             out_path(decisions_dir) / f"part={part}" / "part-0.parquet")
    return {**counts, "removed": int((~decisions["keep"]).sum())}


def meta_frame(meta: pa.Table) -> pd.DataFrame:
    return meta.to_pandas()
