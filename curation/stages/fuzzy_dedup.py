"""Fuzzy deduplication: near-duplicate documents collapse to one keeper per cluster.

The global step runs on Dask:
  1. per partition: shingles -> MinHash signatures -> one hash per LSH band, written as
     (bucket, doc, rank) rows sorted by bucket (resumable: a finished partition file is
     never recomputed);
  2. a few tasks, each owning a range of bucket hashes, read those rows from every file;
     a bucket of k documents gives k - 1 edges to its anchor;
  3. per partition: the shingle sets of its documents that have an edge; each pair's
     true Jaccard must reach `threshold`;
  4. connected components of the verified edges (components.py);
  5. per component the keeper: highest source priority, then the smallest id.
When the candidate pairs and their shingle sets fit `memory_budget_mb`, steps 3-5 run in
worker memory with one task for the whole graph (dedup/clusters.py); otherwise they run
as Dask shuffles and merges, bounded by partition size rather than corpus size.
A document is keyed by (partition << 32 | row) for joins, but every choice (bucket
anchors, keepers, component names) is made on ids, so decisions do not depend on the
partitioning or the number of workers.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from curation.atomic import atomic_path, atomic_write_parquet, write_json_atomic
from curation.dedup import clusters
from curation.dedup.clusters import ROW_BITS, choose_keepers, doc_keys
from curation.dedup.components import connected_component_labels
from curation.dedup.lsh import band_hashes, band_ranks, optimal_bands_rows
from curation.dedup.minhash import MinHasher, shingle_hashes
from curation.dedup.verify import decode_sets, encode_sets, pair_jaccard
from curation.documents import REMOVED, ledger_rows
from curation.stage_context import read_partition
from curation.stages.base import ScopedConfig, Stage, StageContext, StageOutput
from curation.storage import (
    dask_storage_options,
    out_path,
    parquet_rows,
    read_parquet_table,
    remove_tree,
)

DEFAULT_NGRAM = {"word": 5, "char": 24}
DONE_MARKER = "decisions.done.json"
BUCKET_ROWS_PER_TASK = 8_000_000  # bucket rows one bucket task reads (~200 MB of int64)
_ROW_GROUP = 1 << 16  # signature-file row groups: small enough for range reads to skip
_BYTES_PER_PAIR = 16 * 8  # a candidate pair in the in-memory step, with its copies


class FuzzyDedupConfig(ScopedConfig):
    # Shingles: word n-grams (default 5) or character n-grams (default 24); None = default.
    shingle: Literal["word", "char"] = "word"
    ngram: int | None = Field(default=None, ge=1)
    num_perm: int = Field(default=128, ge=1, le=1024)
    # Jaccard at or above which two documents are duplicates (MT-NLG: 0.8).
    threshold: float = Field(default=0.8, gt=0.0, lt=1.0)
    # LSH bands x rows; both or neither. Neither: chosen from `threshold` by minimising
    # the weighted false-positive and false-negative mass of the LSH S-curve.
    bands: int | None = Field(default=None, ge=1)
    rows: int | None = Field(default=None, ge=1)
    false_positive_weight: float = Field(default=0.1, ge=0.0)
    false_negative_weight: float = Field(default=0.9, ge=0.0)
    # Check each candidate pair's true Jaccard before it may merge clusters.
    verify: bool = True
    # Connected components gather the edges into one process only below this size.
    memory_budget_mb: float = Field(default=512, ge=0)

    @model_validator(mode="after")
    def _check(self) -> FuzzyDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both `bands` and `rows`, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds "
                             f"num_perm = {self.num_perm}")
        return self

    @property
    def ngram_size(self) -> int:
        return self.ngram if self.ngram is not None else DEFAULT_NGRAM[self.shingle]

    def bands_rows(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm, self.false_positive_weight,
                                  self.false_negative_weight)


def id_hashes(ids) -> np.ndarray:
    """A stable 64-bit hash of each document id (the same on every machine and run)."""
    return pd.util.hash_array(np.asarray(ids, dtype=object), hash_key="textmill-doc-ids",
                              categorize=False)


def write_band_hashes(docs: pd.DataFrame, part: int, path: str, ngram: int, shingle: str,
                      num_perm: int, seed: int, bands: int, rows: int) -> int:
    """Bucket rows (bucket, doc, rank) of one partition, sorted by bucket; the row count
    (read back from the file when an earlier run already wrote it)."""
    if out_path(path).exists():
        return parquet_rows(path)
    if len(docs) >= 1 << ROW_BITS:
        raise ValueError(f"fuzzy_dedup: partition {part} has {len(docs)} rows; at most 2^32")
    signatures = MinHasher(num_perm, seed).signatures(shingle_hashes(docs["text"], ngram, shingle))
    buckets = band_hashes(signatures, bands, rows, seed).reshape(-1)
    order = np.argsort(buckets)
    table = pa.table({
        "bucket": buckets[order],
        "doc": np.repeat(doc_keys(part, len(docs)), bands)[order],
        "rank": band_ranks(id_hashes(docs["id"].to_numpy()), bands).reshape(-1)[order],
    })
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=_ROW_GROUP)
    return len(table)


def write_candidate_sets(docs: pd.DataFrame, part: int, nodes_dir: str, path: str,
                         ngram: int, shingle: str, with_sets: bool) -> int:
    """id, source and (for verification) the shingle set of this partition's edge nodes."""
    folder = out_path(nodes_dir) / f"part={part}"
    keys = (read_parquet_table(folder).column("doc").to_numpy() if folder.exists()
            else np.empty(0, dtype=np.int64))
    rows = np.sort(keys & ((1 << ROW_BITS) - 1))
    chosen = docs.iloc[rows]
    table = {"doc": doc_keys(part, len(docs))[rows],
             "id": pa.array(chosen["id"].astype(str).to_numpy(), pa.string()),
             "source": pa.array(chosen["source"].astype(str).to_numpy(), pa.string())}
    if with_sets:
        table["shingles"] = encode_sets(shingle_hashes(chosen["text"], ngram, shingle))
    atomic_write_parquet(pa.table(table), path)
    return len(rows)


def verified_edges(edges: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Edges whose two shingle sets have Jaccard >= threshold (columns lo, hi, jaccard)."""
    jaccard = pair_jaccard(decode_sets(edges["lo_sets"]), decode_sets(edges["hi_sets"]))
    kept = jaccard >= threshold
    return pd.DataFrame({"lo": edges["lo"].to_numpy()[kept], "hi": edges["hi"].to_numpy()[kept],
                         "jaccard": jaccard[kept]})


class FuzzyDedupStage(Stage):
    name = "fuzzy_dedup"
    config_class = FuzzyDedupConfig

    def prepare(self, ctx: StageContext) -> None:
        if (ctx.workdir / DONE_MARKER).exists():
            return
        cfg, seed = self.config, int(self.spec.seed)
        bands, rows = cfg.bands_rows()
        signature_dir = ctx.workdir / f"signatures-{self._signature_key(seed, bands, rows)}"
        paths = [str(signature_dir / f"part-{k:05d}.parquet") for k in range(len(ctx.partitions))]
        seconds, counts = {}, {}
        if paths:
            started = time.perf_counter()
            bucket_rows = ctx.map(_write_band_hashes_at, paths, cfg.ngram_size, cfg.shingle,
                                  cfg.num_perm, seed, bands, rows, columns=["id", "text"],
                                  desc="fuzzy_dedup: minhash")
            seconds["signatures"] = round(time.perf_counter() - started, 3)
            counts = self._decide(ctx, paths, sum(bucket_rows), seconds)
        write_json_atomic(ctx.workdir / DONE_MARKER, {"bands": bands, "rows": rows,
                                                      "seconds": seconds, **counts})

    def _decide(self, ctx: StageContext, paths: list[str], bucket_rows: int,
                seconds: dict) -> dict:
        """Buckets -> candidate pairs, then verification, components and keepers in worker
        memory when they fit the budget, else by Dask shuffles."""
        client, cfg = ctx.client, self.config
        remove_tree(ctx.workdir / "decisions")
        started = time.perf_counter()
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        tasks = max(workers, -(-bucket_rows // BUCKET_ROWS_PER_TASK))
        edge_parts = [client.submit(clusters.bucket_range_edges, paths, lo, hi, pure=False)
                      for lo, hi in clusters.bucket_ranges(tasks)]
        budget = int(cfg.memory_budget_mb * 2**20)
        pairs_upper = sum(client.gather([client.submit(len, e) for e in edge_parts]))
        seconds["buckets"] = round(time.perf_counter() - started, 3)
        if pairs_upper * _BYTES_PER_PAIR <= budget:
            counts = self._decide_in_memory(ctx, edge_parts, budget, seconds)
            if counts is not None:
                return counts
        started = time.perf_counter()
        self._decide_by_shuffles(ctx, edge_parts)
        seconds["shuffles"] = round(time.perf_counter() - started, 3)
        return {"path": "shuffles"}

    def _decide_in_memory(self, ctx, edge_parts, budget: int, seconds: dict) -> dict | None:
        """None (and nothing written) when the shingle sets turn out over the budget."""
        client, cfg = ctx.client, self.config
        started = time.perf_counter()
        plan = client.submit(clusters.plan_candidates, *edge_parts, pure=False)
        pairs, parts = client.submit(clusters.plan_summary, plan, pure=False).result()
        sources = self.sources_in_scope()
        tables = [client.submit(_candidate_table, str(ctx.partitions[k]), k, sources, plan,
                                cfg.ngram_size, cfg.shingle, cfg.verify, pure=False)
                  for k in parts]
        sizes = client.gather([client.submit(clusters.table_bytes, t) for t in tables])
        seconds["candidate_sets"] = round(time.perf_counter() - started, 3)
        if pairs * _BYTES_PER_PAIR + 3 * sum(sizes) > budget:
            return None
        started = time.perf_counter()
        priorities = {s.name: s.priority for s in self.spec.sources}
        counts = client.submit(clusters.decide_in_memory, plan, tables, cfg.threshold,
                               cfg.verify, priorities, str(ctx.workdir / "decisions"),
                               pure=False).result()
        seconds["verify_components_keepers"] = round(time.perf_counter() - started, 3)
        return {"path": "in_memory", **counts}

    def _decide_by_shuffles(self, ctx: StageContext, edge_parts) -> None:
        """Candidate pairs -> verified edges -> components -> keepers as Dask joins."""
        import dask.dataframe as dd

        cfg, nparts = self.config, len(ctx.partitions)
        options = dask_storage_options(ctx.workdir)
        edge_meta = pd.DataFrame({"lo": pd.Series(dtype="int64"), "hi": pd.Series(dtype="int64")})
        candidates = dd.from_delayed(edge_parts, meta=edge_meta, verify_meta=False)
        candidates = candidates.drop_duplicates(split_out=nparts).persist()
        # Each partition recomputes the shingle sets of its own documents that have an edge.
        nodes = dd.concat([candidates["lo"], candidates["hi"]]).rename("doc").to_frame()
        nodes = nodes.drop_duplicates(split_out=nparts)
        nodes = nodes.assign(part=nodes["doc"] // (1 << ROW_BITS))
        nodes_dir, sets_dir = ctx.workdir / "nodes", ctx.workdir / "candidate_sets"
        nodes.to_parquet(str(nodes_dir), partition_on=["part"], write_index=False,
                         overwrite=True, storage_options=options)
        set_paths = [str(sets_dir / f"part-{k:05d}.parquet") for k in range(nparts)]
        ctx.map(_write_candidate_sets_at, str(nodes_dir), set_paths, cfg.ngram_size,
                cfg.shingle, cfg.verify, columns=["id", "source", "text"],
                desc="fuzzy_dedup: candidate sets")
        sets = dd.read_parquet(set_paths, storage_options=options)
        edges = candidates
        if cfg.verify:
            shingles = sets[["doc", "shingles"]]
            edges = (
                candidates.merge(shingles.rename(columns={"doc": "lo", "shingles": "lo_sets"}),
                                 on="lo")
                .merge(shingles.rename(columns={"doc": "hi", "shingles": "hi_sets"}), on="hi")
                .map_partitions(verified_edges, cfg.threshold,
                                meta=edge_meta.assign(jaccard=pd.Series(dtype="float64")))
            ).persist()
        labels = connected_component_labels(edges, int(cfg.memory_budget_mb * 2**20))
        members = labels.merge(sets[["doc", "id", "source"]], on="doc")
        meta = pd.DataFrame({
            "part": pd.Series(dtype="int64"), "row": pd.Series(dtype="int64"),
            "id": pd.Series(dtype=str), "component": pd.Series(dtype=str),
            "keeper": pd.Series(dtype=str), "cluster_size": pd.Series(dtype="int64"),
            "keep": pd.Series(dtype=bool)})
        priorities = {s.name: s.priority for s in self.spec.sources}
        decisions = members.shuffle(on="label", npartitions=nparts).map_partitions(
            choose_keepers, priorities, meta=meta)
        decisions.to_parquet(str(ctx.workdir / "decisions"), partition_on=["part"],
                             write_index=False, overwrite=True, storage_options=options)

    def _signature_key(self, seed: int, bands: int, rows: int) -> str:
        cfg = self.config
        what = [cfg.shingle, cfg.ngram_size, cfg.num_perm, seed, bands, rows, "sorted"]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        folder = out_path(workdir) / "decisions" / f"part={part}"
        decisions = read_parquet_table(folder).to_pandas() if folder.exists() else None
        if decisions is None or not (~decisions["keep"]).any():
            return StageOutput(kept=docs, ledger=ledger_rows(docs.iloc[:0], self.name, REMOVED,
                                                             ""))
        removed_rows = decisions[~decisions["keep"]].sort_values("row")
        rows = removed_rows["row"].to_numpy()
        if rows.max() >= len(docs) or (docs["id"].to_numpy()[rows] != removed_rows["id"]
                                       .to_numpy()).any():
            raise ValueError(f"fuzzy_dedup: decisions for partition {part} do not match its "
                             f"documents (rows/ids differ): was the input changed?")
        is_removed = np.zeros(len(docs), dtype=bool)
        is_removed[rows] = True
        detail = [{"component": c, "keeper": k, "cluster_size": int(n)} for c, k, n in zip(
            removed_rows["component"], removed_rows["keeper"], removed_rows["cluster_size"],
            strict=True)]
        ledger = ledger_rows(docs[is_removed], self.name, REMOVED, "near_duplicate", detail)
        return StageOutput(kept=docs[~is_removed], ledger=ledger)


def _write_band_hashes_at(docs, part, paths, *args):
    return write_band_hashes(docs, part, paths[part], *args)


def _write_candidate_sets_at(docs, part, nodes_dir, paths, *args):
    return write_candidate_sets(docs, part, nodes_dir, paths[part], *args)


def _candidate_table(path: str, part: int, sources: list[str] | None, plan: dict, *args):
    """`clusters.candidate_table` on the in-scope documents of one input partition."""
    columns = ["id", "source", "text"]
    docs = read_partition(path, columns)
    if sources is not None:
        docs = docs[docs["source"].isin(sources)].reset_index(drop=True)
    return clusters.candidate_table(docs, part, plan, *args)
