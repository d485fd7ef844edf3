"""Fuzzy deduplication: near-duplicate documents collapse to one keeper per cluster.

The global step runs on Dask, bounded by partition size rather than corpus size:
  1. per partition: shingles -> MinHash signatures -> one hash per LSH band, written as
     (bucket, doc, rank) rows (resumable: a finished partition file is never recomputed);
  2. shuffle on the bucket; a bucket of k documents gives k - 1 edges to its anchor;
  3. per partition: the shingle sets of documents that have an edge; two Dask merges
     put both sets beside each edge, whose true Jaccard must reach `threshold`;
  4. connected components of the verified edges (components.py);
  5. per component the keeper: highest source priority, then the smallest id.
A document is keyed by (partition << 32 | row) for joins, but every choice (bucket
anchors, keepers, component names) is made on ids, so decisions do not depend on the
partitioning or the number of workers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, model_validator

from curation.atomic import atomic_write_parquet, write_json_atomic
from curation.dedup.components import connected_component_labels
from curation.dedup.keeper import keeper_first
from curation.dedup.lsh import band_hashes, band_ranks, bucket_anchor_edges, optimal_bands_rows
from curation.dedup.minhash import MinHasher, shingle_hashes
from curation.dedup.verify import decode_sets, encode_sets, pair_jaccard
from curation.documents import REMOVED, ledger_rows
from curation.stages.base import ScopedConfig, Stage, StageContext, StageOutput
from curation.storage import dask_storage_options, out_path, read_parquet_table

DEFAULT_NGRAM = {"word": 5, "char": 24}
DONE_MARKER = "decisions.done.json"
ROW_BITS = 32  # doc key = partition << 32 | row


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


def doc_keys(part: int, n: int) -> np.ndarray:
    return (np.int64(part) << np.int64(ROW_BITS)) | np.arange(n, dtype=np.int64)


def write_band_hashes(docs: pd.DataFrame, part: int, path: str, ngram: int, shingle: str,
                      num_perm: int, seed: int, bands: int, rows: int) -> bool:
    """Bucket rows (bucket, doc, rank) of one partition; False when already on disk."""
    if out_path(path).exists():
        return False
    if len(docs) >= 1 << ROW_BITS:
        raise ValueError(f"fuzzy_dedup: partition {part} has {len(docs)} rows; at most 2^32")
    signatures = MinHasher(num_perm, seed).signatures(shingle_hashes(docs["text"], ngram, shingle))
    buckets = band_hashes(signatures, bands, rows, seed)
    frame = pd.DataFrame({
        "bucket": buckets.reshape(-1),
        "doc": np.repeat(doc_keys(part, len(docs)), bands),
        "rank": band_ranks(id_hashes(docs["id"].to_numpy()), bands).reshape(-1),
    })
    atomic_write_parquet(frame, path)
    return True


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


def choose_keepers(members: pd.DataFrame, priorities: dict[str, int]) -> pd.DataFrame:
    """Per component (label): the keeper (highest priority, then smallest id) and its name.

    All members of a component must be in `members` (one shuffle partition). The
    component is named by its smallest id, so the name does not depend on doc keys.
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
        if paths:
            ctx.map(_write_band_hashes_at, paths, cfg.ngram_size, cfg.shingle, cfg.num_perm,
                    seed, bands, rows, columns=["id", "text"], desc="fuzzy_dedup: minhash")
            self._decide(ctx, paths)
        write_json_atomic(ctx.workdir / DONE_MARKER, {"bands": bands, "rows": rows})

    def _decide(self, ctx: StageContext, signature_paths: list[str]) -> None:
        """Buckets -> candidate edges -> verified edges -> components -> keepers, on Dask."""
        import dask.dataframe as dd

        cfg, nparts = self.config, len(signature_paths)
        options = dask_storage_options(ctx.workdir)
        buckets = dd.read_parquet(signature_paths, storage_options=options).shuffle(
            on="bucket", npartitions=nparts)
        edge_meta = pd.DataFrame({"lo": pd.Series(dtype="int64"), "hi": pd.Series(dtype="int64")})
        candidates = buckets.map_partitions(bucket_anchor_edges, meta=edge_meta)
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
        what = [cfg.shingle, cfg.ngram_size, cfg.num_perm, seed, bands, rows]
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
