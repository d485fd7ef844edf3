"""Fuzzy deduplication: near-duplicate documents collapse to one keeper per cluster.

The global step runs on Dask:
  1. per partition: shingles -> MinHash signatures -> one hash per LSH band, written as
     (bucket, doc, rank) rows sorted by bucket (resumable: a finished partition file is
     never recomputed);
  2. a few tasks, each owning a range of bucket hashes, read those rows from every file;
     a bucket of k documents gives k - 1 edges to its anchor;
  3. the distinct candidate pairs, by groups of partitions; per partition the shingle
     sets of its documents that have an edge, held in worker memory; each pair's true
     Jaccard, which must reach `threshold`, by tasks that each hold the sets of two bins
     of documents (dedup/clusters.py);
  4. connected components of the verified edges (components.py);
  5. per component the keeper: highest source priority, then the smallest id.
Every task of steps 3-5 is sized from counts to fit `memory_budget_mb` (dedup/routing.py):
more, smaller tasks when the corpus has more candidates. Only a verified graph whose nodes
do not fit one task has its components and keepers found by Dask joins.
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

from curation.atomic import atomic_path, write_json_atomic
from curation.dedup import clusters
from curation.dedup.clusters import ROW_BITS, choose_keepers, doc_keys
from curation.dedup.components import connected_component_labels
from curation.dedup.lsh import band_hashes, band_ranks, optimal_bands_rows
from curation.dedup.minhash import MinHasher, shingle_hashes
from curation.dedup.routing import Budget, part_groups, runs_within
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
    # What one task of the global step may hold; the step is cut into tasks that fit.
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
        """Buckets -> candidate pairs -> verified pairs -> components -> keepers, as tasks
        that each fit the memory budget (sized from counts, routing.py)."""
        client, cfg = ctx.client, self.config
        budget = Budget(int(cfg.memory_budget_mb * 2**20))
        remove_tree(ctx.workdir / "decisions")
        started = time.perf_counter()
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        tasks = max(workers, -(-bucket_rows // BUCKET_ROWS_PER_TASK))
        edge_parts = [client.submit(clusters.bucket_range_edges, paths, lo, hi, pure=False)
                      for lo, hi in clusters.bucket_ranges(tasks)]
        plans = self._plans(ctx, edge_parts, budget)
        summaries = client.gather([client.submit(clusters.plan_summary, p, pure=False)
                                   for p in plans])
        del edge_parts
        pairs = sum(n for n, _ in summaries)
        parts = sorted({k for _, ks in summaries for k in ks})
        counts = {"candidate_pairs": pairs, "pair_groups": len(plans)}
        seconds["buckets"] = round(time.perf_counter() - started, 3)
        if not pairs:
            return {**counts, "verified_pairs": 0, "removed": 0}

        started = time.perf_counter()
        nodes = [client.submit(clusters.plan_nodes, p, pure=False) for p in plans]
        candidates = [client.submit(_candidate_sets, str(ctx.partitions[k]), k,
                                    self.sources_in_scope(), nodes, cfg.ngram_size, cfg.shingle,
                                    cfg.verify, budget.bin_bytes, pure=False) for k in parts]
        sizes = client.gather([client.submit(clusters.candidates_summary, c, pure=False)
                               for c in candidates])
        seconds["candidate_sets"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        if cfg.verify:
            # at least one verification task per worker, so all of them share the work
            per_task = min(budget.verify_pairs, -(-pairs // workers))
            verified = self._verify(client, plans, candidates, sizes, budget, per_task, counts)
        else:
            verified = [client.submit(clusters.plan_pairs, p, pure=False) for p in plans]
        metas = [client.submit(clusters.candidates_meta, c, pure=False) for c in candidates]
        del plans, nodes, candidates
        priorities = {s.name: s.priority for s in self.spec.sources}
        decisions_dir = str(ctx.workdir / "decisions")
        if budget.fits_one_keeper_task(pairs, sum(s["meta_bytes"] for s in sizes)):
            counts |= client.submit(clusters.decide_keepers, verified, metas, priorities,
                                    decisions_dir, pure=False).result()
            counts["components"] = "one_task"
        else:
            counts |= _decide_by_joins(client, verified, metas, priorities, decisions_dir,
                                       budget.bytes, len(ctx.partitions),
                                       dask_storage_options(ctx.workdir))
            counts["components"] = "dask_joins"
        seconds["verify_components_keepers"] = round(time.perf_counter() - started, 3)
        return counts

    def _plans(self, ctx: StageContext, edge_parts: list, budget: Budget) -> list:
        """Futures of the deduplicated candidate pairs, one per group of `lo` partitions
        whose pairs fit the budget (one group when all edges do)."""
        client, nparts = ctx.client, len(ctx.partitions)
        upper = sum(client.gather([client.submit(len, e, pure=False) for e in edge_parts]))
        if upper <= budget.plan_pairs:
            return [client.submit(clusters.plan_candidates, *edge_parts, pure=False)]
        per_part = sum(client.gather([client.submit(clusters.lo_part_counts, e, nparts,
                                                    pure=False) for e in edge_parts]))
        return [client.submit(clusters.plan_candidates,
                              *[client.submit(clusters.edges_with_lo_in, e, a, b, pure=False)
                                for e in edge_parts], pure=False)
                for a, b in part_groups(per_part, budget.plan_pairs)]

    def _verify(self, client, plans: list, candidates: list, sizes: list[dict], budget: Budget,
                pairs_per_task: int, counts: dict) -> list:
        """Futures of the verified edges: one task per (bin of lo, bin of hi, chunk) of
        each plan, holding the two bins' shingle sets."""
        blocks = [(key, nbytes, client.submit(clusters.candidates_block, c, i, pure=False))
                  for c, size in zip(candidates, sizes, strict=True)
                  for i, (key, nbytes) in enumerate(size["blocks"])]
        starts = runs_within([nbytes for _, nbytes, _ in blocks], budget.bin_bytes)
        bin_keys = [blocks[i][0] for i in starts]
        bins = [[f for _, _, f in blocks[a:b]]
                for a, b in zip(starts, [*starts[1:], len(blocks)], strict=True)]
        routed = [client.submit(clusters.route, plan, bin_keys, pairs_per_task, pure=False)
                  for plan in plans]
        cells = client.gather([client.submit(clusters.route_keys, r, pure=False) for r in routed])
        verified = []
        for plan_cells, cells_of in zip(routed, cells, strict=True):
            for i, j, chunk in cells_of:
                cell = client.submit(clusters.routed_cell, plan_cells, (i, j, chunk), pure=False)
                held = bins[i] if i == j else bins[i] + bins[j]
                verified.append(client.submit(clusters.verify_pairs, cell,
                                              self.config.threshold, *held, pure=False))
        counts |= {"bins": len(bins), "verify_tasks": len(verified)}
        return verified

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


def _candidate_sets(path: str, part: int, sources: list[str] | None, *args):
    """`clusters.candidate_sets` on the in-scope documents of one input partition."""
    docs = read_partition(path, ["id", "source", "text"])
    if sources is not None:
        docs = docs[docs["source"].isin(sources)].reset_index(drop=True)
    return clusters.candidate_sets(docs, part, *args)


def _decide_by_joins(client, verified: list, metas: list, priorities: dict[str, int],
                     decisions_dir: str, budget_bytes: int, nparts: int,
                     storage_options: dict) -> dict:
    """Components and keepers as Dask joins, for a verified graph whose nodes do not fit
    one task: label propagation (components.py), then members grouped by label."""
    import dask.dataframe as dd

    edge_meta = pd.DataFrame({"lo": pd.Series(dtype="int64"), "hi": pd.Series(dtype="int64")})
    edges = dd.from_delayed(verified, meta=edge_meta, verify_meta=False).persist()
    count = int(edges.shape[0].compute())
    if not count:
        return {"verified_pairs": 0, "removed": 0}
    labels = connected_component_labels(edges, budget_bytes)
    node_meta = pd.DataFrame({"doc": pd.Series(dtype="int64"), "id": pd.Series(dtype=str),
                              "source": pd.Series(dtype=str)})
    nodes = dd.from_delayed([client.submit(clusters.meta_frame, m, pure=False) for m in metas],
                            meta=node_meta, verify_meta=False)
    meta = pd.DataFrame({
        "part": pd.Series(dtype="int64"), "row": pd.Series(dtype="int64"),
        "id": pd.Series(dtype=str), "component": pd.Series(dtype=str),
        "keeper": pd.Series(dtype=str), "cluster_size": pd.Series(dtype="int64"),
        "keep": pd.Series(dtype=bool)})
    decisions = labels.merge(nodes, on="doc").shuffle(on="label", npartitions=nparts)
    decisions = decisions.map_partitions(choose_keepers, priorities, meta=meta).persist()
    removed = int((~decisions["keep"]).sum().compute())
    decisions.to_parquet(decisions_dir, partition_on=["part"], write_index=False,
                         overwrite=True, storage_options=storage_options)
    return {"verified_pairs": count, "removed": removed}
