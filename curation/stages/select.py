"""The `select` stage: keep the budget of documents that best serve a target task.

Methods, behind the same keys (docs are ranked by a score, lower chosen first):
- `got`: GOT-D (Kang et al., ICLR 2024), the calibrated gradient of the entropic OT
  distance between pool and target embeddings (curation/select/got.py);
- `dsir`: DSIR (Xie et al., 2023), importance weight log p_target(x) − log p_pool(x)
  under hashed uni/bigram bag-of-words models, resampled without replacement by Gumbel
  top-k: score = −(log weight + Gumbel noise);
- `random`: seeded uniform choice, score = −Gumbel noise.
Gumbel noise is a function of (spec seed, document id), so the choice does not depend on
partitioning or workers.

`prepare` runs on the cluster: features and scores per partition on the workers (files
in the work directory; GOT-D's embeddings hashed, or from a checkpoint or a
sentence-transformers model: curation/select/embeddings.py), GOT-D's chunks as cluster
tasks against the target embeddings, and the global cut by the histogram passes of
curation/select/budget.py. Every file is written atomically and reused by a rerun. `run` keeps
the chosen documents; the rest become `removed` / `select.not_chosen` ledger rows with
their score.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from curation.atomic import save_npy, write_text_atomic
from curation.config import StrictModel
from curation.documents import REMOVED, empty_ledger, ledger_rows
from curation.progress import track
from curation.select import budget as cut
from curation.select.embeddings import EmbeddingSpec, embed, model_fingerprint
from curation.select.features import (
    bucket_log_weights,
    bucket_totals,
    gumbel_noise,
    token_counts,
)
from curation.select.got import chunk_count, got_scores
from curation.stages.base import ScopedConfig, Stage, StageOutput
from curation.storage import load_npy, out_path, remove_tree
from curation.tasks.files import read_task_texts, task_files

DEFAULT_DIMS = {"got": 256, "dsir": 10_000}
SELECTION = "selection.json"
REASON = "select.not_chosen"


class TargetSpec(StrictModel):
    paths: list[str] = Field(min_length=1)
    text_field: str = "text"


class BudgetSpec(StrictModel):
    docs: int | None = Field(None, ge=0)
    tokens: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one(self) -> BudgetSpec:
        if (self.docs is None) == (self.tokens is None):
            raise ValueError("give exactly one of `docs` or `tokens`")
        return self


class OTSpec(StrictModel):
    reg: float = Field(0.1, ge=0.01)  # costs are in [0, 4]: exp(-4/0.01) is still > 0
    iters: int = Field(200, ge=1)
    chunk: int = Field(50_000, ge=2)


class SelectConfig(ScopedConfig):
    method: Literal["got", "dsir", "random"]
    target: TargetSpec | None = None
    budget: BudgetSpec
    embedding: EmbeddingSpec = EmbeddingSpec()
    ot: OTSpec = OTSpec()

    @model_validator(mode="after")
    def _target(self) -> SelectConfig:
        if self.method != "random" and self.target is None:
            raise ValueError(f"method {self.method!r} needs `target: {{paths: [...]}}`")
        if self.method != "got" and self.embedding.resolved_kind != "hashed":
            raise ValueError(f"embedding: {self.embedding.resolved_kind} is for method got; "
                             f"{self.method} uses hashed n-grams (`embedding: {{dims: N}}`)")
        return self

    @property
    def dims(self) -> int:
        return self.embedding.dims or DEFAULT_DIMS.get(self.method, 256)

    def target_files(self, base_dir: Path) -> list[Path]:
        return task_files(self.target.paths, base_dir, "select target")

    def missing_files(self, base_dir: Path) -> list[str]:
        problems = self.embedding.missing_files(base_dir)
        if self.target is None:
            return problems
        try:
            self.target_files(base_dir)
        except FileNotFoundError as exc:
            problems.append(f"target.paths: {exc}")
        return problems

    def embedder(self, base_dir: Path) -> dict:
        """The keyword arguments of curation.select.embeddings.embed for this config."""
        path = self.embedding.model_path(base_dir)
        tokenizer = self.embedding.tokenizer
        return {"kind": self.embedding.resolved_kind, "dims": self.dims,
                "path": None if path is None else str(path),
                "tokenizer": None if tokenizer is None else str(Path(base_dir) / tokenizer)}


# ---- worker functions (module level: they travel to the cluster) ----

def _part_file(workdir: str, part: int, kind: str) -> Path:
    return out_path(workdir) / kind / f"part-{part:05d}.npy"


def featurize_partition(docs: pd.DataFrame, part: int, workdir: str, method: str,
                        embedder: dict, seed: int, log_ratio: np.ndarray | None):
    """Tokens and (for dsir, random) scores of one partition; GOT-D embeddings and the
    pool's DSIR bucket counts (pass without `log_ratio`) to disk. The tokens file is
    written last: once it exists the partition's features are done."""
    texts = docs["text"].tolist()
    for kind in ("tokens", "scores", "embeddings", "buckets"):
        _part_file(workdir, part, kind).parent.mkdir(parents=True, exist_ok=True)
    if method == "got":
        save_npy(_part_file(workdir, part, "embeddings"), embed(texts, **embedder))
    elif method == "random":
        save_npy(_part_file(workdir, part, "scores"), -gumbel_noise(docs["id"], seed))
    elif log_ratio is None:
        save_npy(_part_file(workdir, part, "buckets"), bucket_totals(texts, embedder["dims"]))
    else:
        weights = bucket_log_weights(texts, log_ratio)
        save_npy(_part_file(workdir, part, "scores"), -(weights + gumbel_noise(docs["id"], seed)))
        return
    save_npy(_part_file(workdir, part, "tokens"), token_counts(texts))


def _done(workdir: str, kind: str):
    """skip= for ctx.map: the partitions whose `kind` file an earlier attempt wrote."""
    return lambda part: out_path(_part_file(workdir, part, kind)).exists()


def _chunk_file(workdir: str, c: int) -> Path:
    return out_path(workdir) / "chunks" / f"chunk-{c:05d}.npy"


def solve_chunk(workdir: str, c: int, chunks: int, offsets: list[int], target_path: str,
                reg: float, iters: int) -> None:
    """GOT-D scores of chunk c: the documents at global positions g ≡ c (mod chunks)."""
    pieces, owners = [], []
    for part in range(len(offsets) - 1):
        lo, hi = offsets[part], offsets[part + 1]
        first = (c - lo) % chunks
        if lo + first >= hi:
            continue
        emb = load_npy(_part_file(workdir, part, "embeddings"), mmap_mode="r")
        pieces.append(np.asarray(emb[first::chunks]))
        owners.append(part)
    pool = np.concatenate(pieces) if pieces else np.zeros((0, 1), dtype=np.float32)
    scores = got_scores(pool, load_npy(target_path), reg, iters)
    path = _chunk_file(workdir, c)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npy(path, scores)


def gather_got_scores(docs: pd.DataFrame, part: int, workdir: str, offset: int,
                      chunks: int) -> None:
    """This partition's GOT-D scores, read back from the chunks that hold its rows."""
    positions = offset + np.arange(len(docs))
    scores = np.empty(len(docs))
    for c in np.unique(positions % chunks):
        mine = positions % chunks == c
        chunk = load_npy(_chunk_file(workdir, c), mmap_mode="r")
        scores[mine] = chunk[positions[mine] // chunks]  # chunk c lists c, c + K, …
    save_npy(_part_file(workdir, part, "scores"), scores)


def _load(workdir: str, part: int, weighted: bool):
    scores = load_npy(_part_file(workdir, part, "scores"))
    weights = load_npy(_part_file(workdir, part, "tokens")).astype(np.float64) if weighted \
        else np.ones(len(scores))
    return scores, weights


def score_range(docs, part: int, workdir: str):
    scores = load_npy(_part_file(workdir, part, "scores"))
    return (float(scores.min()), float(scores.max())) if len(scores) else None


def score_histogram(docs, part: int, workdir: str, weighted: bool, lo: float, hi: float):
    scores, weights = _load(workdir, part, weighted)
    return cut.histogram(scores, weights, lo, hi)


def bin_members(docs, part: int, workdir: str, weighted: bool, lo: float, hi: float,
                b: int, offset: int):
    scores, weights = _load(workdir, part, weighted)
    inside = np.flatnonzero(cut.bin_of(scores, lo, hi) == b)
    return scores[inside], offset + inside, weights[inside]


def source_histograms(docs: pd.DataFrame, part: int, workdir: str, lo: float, hi: float,
                      offset: int, chosen_cut: dict) -> dict:
    """Per source: score histograms of chosen and not chosen documents."""
    scores, tokens = _load(workdir, part, weighted=True)
    chosen = cut.Cut(**chosen_cut).chosen(scores, offset + np.arange(len(scores)))
    bins = cut.bin_of(scores, lo, hi)
    out = {}
    for source in pd.unique(docs["source"]):
        mine = (docs["source"] == source).to_numpy()
        out[str(source)] = {
            "chosen": (np.bincount(bins[mine & chosen], minlength=cut.BINS),
                       int(tokens[mine & chosen].sum())),
            "not_chosen": (np.bincount(bins[mine & ~chosen], minlength=cut.BINS),
                           int(tokens[mine & ~chosen].sum())),
        }
    return out


class SelectStage(Stage):
    name = "select"
    config_class = SelectConfig

    def params(self) -> dict:
        import hashlib

        cfg = self.config
        digests = {} if cfg.target is None else {
            str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in cfg.target_files(self._base_dir)}
        embedder = cfg.embedder(self._base_dir)
        return {**super().params(), "target_files": digests, "seed": self.spec.seed,
                "embedding_model": model_fingerprint(embedder["kind"], embedder["path"])}

    @property
    def _base_dir(self) -> Path:
        return Path(getattr(self.spec, "base_dir", "."))

    def _target_texts(self) -> list[str]:
        cfg = self.config
        files = cfg.target_files(self._base_dir)
        texts = [t for path in files for t in read_task_texts(path, [cfg.target.text_field])]
        if not texts:
            raise ValueError(f"stages.select.target: no text in {[str(f) for f in files]}")
        return texts

    def prepare(self, ctx) -> None:
        """Features, scores and the cut. Every step's files are written atomically and
        reused by a rerun of an interrupted run: finished partitions are not featurised
        again, solved OT chunks not solved again, and a finished selection is kept."""
        cfg, workdir = self.config, out_path(ctx.workdir)
        if (workdir / SELECTION).exists():
            return
        workdir.mkdir(parents=True, exist_ok=True)
        wd, seed, dims = str(workdir), int(self.spec.seed), cfg.dims
        embedder = cfg.embedder(self._base_dir)
        cols = ["id", "text"]
        ctx.map(featurize_partition, wd, cfg.method, embedder, seed, None, columns=cols,
                desc="select: features", skip=_done(wd, "tokens"))
        parts = range(len(ctx.partitions))
        counts = [len(load_npy(_part_file(wd, k, "tokens"), mmap_mode="r")) for k in parts]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
        if cfg.method == "dsir":
            target = bucket_totals(self._target_texts(), dims)
            pool = np.sum([load_npy(_part_file(wd, k, "buckets")) for k in parts], axis=0)
            log_ratio = np.log((target + 1) / (target + 1).sum()) \
                - np.log((pool + 1) / (pool + 1).sum())
            ctx.map(featurize_partition, wd, cfg.method, embedder, seed, log_ratio, columns=cols,
                    desc="select: dsir weights", skip=_done(wd, "scores"))
        elif cfg.method == "got" and not all(_done(wd, "scores")(k) for k in parts):
            target_path = workdir / "target_embeddings.npy"
            target = ctx.client.submit(embed, self._target_texts(), **embedder, pure=False)
            save_npy(target_path, target.result())
            chunks = chunk_count(offsets[-1], cfg.ot.chunk)
            futures = [ctx.client.submit(solve_chunk, wd, c, chunks, offsets, str(target_path),
                                         cfg.ot.reg, cfg.ot.iters, pure=False)
                       for c in range(chunks) if not _chunk_file(wd, c).exists()]
            track(futures, "select: OT chunks")
            ctx.client.gather(futures)
            ctx.map(_gather_one, wd, offsets, chunks, columns=["id"],
                    desc="select: gather scores", skip=_done(wd, "scores"))
        if cfg.method == "got":
            for scratch in ("embeddings", "chunks"):  # 4 bytes x dims per document: drop
                remove_tree(workdir / scratch)
        selection = self._choose(ctx, wd, offsets)
        write_text_atomic(workdir / SELECTION, json.dumps(selection, indent=2))
        print(f"select ({cfg.method}): {selection['chosen_docs']} of {offsets[-1]} documents "
              f"chosen, {selection['chosen_tokens']} tokens")

    def _choose(self, ctx, wd: str, offsets: list[int]) -> dict:
        cfg = self.config
        weighted = cfg.budget.tokens is not None
        limit = float(cfg.budget.tokens if weighted else cfg.budget.docs)
        ranges = [r for r in ctx.map(score_range, wd, columns=["id"], desc="select: range")
                  if r is not None]
        lo = min((r[0] for r in ranges), default=0.0)
        hi = max((r[1] for r in ranges), default=0.0)
        hist = np.sum(ctx.map(score_histogram, wd, weighted, lo, hi, columns=["id"],
                              desc="select: histogram"), axis=0) if ranges else np.zeros(1)
        if hist.sum() <= limit:
            chosen_cut = cut.EVERYTHING
        else:
            b, below = cut.crossing_bin(hist, limit)
            members = ctx.map(_bin_members_at, wd, weighted, lo, hi, b, offsets,
                              columns=["id"], desc="select: cut")
            scores, positions, weights = (np.concatenate(x) for x in zip(*members, strict=True))
            chosen_cut = cut.cut_in_bin(scores, positions, weights, below, limit)
        per_source = ctx.map(_source_histograms_at, wd, lo, hi, offsets,
                             chosen_cut.to_json(), columns=["source"],
                             desc="select: summary")
        summary = _summarize_sources(per_source, lo, hi)
        return {
            "method": cfg.method,
            "cut": chosen_cut.to_json(),
            "offsets": offsets,
            "pool_docs": offsets[-1],
            "chosen_docs": sum(s["chosen"]["docs"] for s in summary.values()),
            "chosen_tokens": sum(s["chosen"]["tokens"] for s in summary.values()),
            "budget": cfg.budget.model_dump(exclude_none=True),
            "sources": summary,
        }

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> StageOutput:
        path = out_path(workdir) / SELECTION
        if not path.exists():
            raise FileNotFoundError(f"{path}: select.prepare has not run")
        selection = json.loads(path.read_text())
        scores = load_npy(_part_file(str(workdir), part, "scores"))
        if len(scores) != len(docs):
            raise RuntimeError(f"select: partition {part} has {len(docs)} in-scope documents, "
                               f"its scores {len(scores)}: the work directory is stale")
        positions = selection["offsets"][part] + np.arange(len(docs))
        chosen = cut.Cut(**selection["cut"]).chosen(scores, positions)
        docs = docs.reset_index(drop=True)
        dropped = np.flatnonzero(~chosen)
        detail = [{"method": self.config.method, "score": float(scores[i])} for i in dropped]
        ledger = ledger_rows(docs.iloc[dropped], self.name, REMOVED, REASON, detail) \
            if len(dropped) else empty_ledger()
        return StageOutput(docs[chosen].reset_index(drop=True), ledger)

    def summarize(self, out: Path, client=None) -> None:
        """OUT/selection.json: method, budget, cut and per-source score distributions
        (aggregated on the workers in `prepare`; copied here)."""
        for folder in sorted((out_path(out) / "stages").glob(f"*_{self.name}")):
            source = folder / SELECTION
            if source.exists():
                data = json.loads(source.read_text())
                data.pop("offsets", None)
                write_text_atomic(out_path(out) / SELECTION, json.dumps(data, indent=2))


def _gather_one(docs, part, wd, offsets, chunks):
    return gather_got_scores(docs, part, wd, offsets[part], chunks)


def _bin_members_at(docs, part, wd, weighted, lo, hi, b, offsets):
    return bin_members(docs, part, wd, weighted, lo, hi, b, offsets[part])


def _source_histograms_at(docs, part, wd, lo, hi, offsets, chosen_cut):
    return source_histograms(docs, part, wd, lo, hi, offsets[part], chosen_cut)


QUANTILES = (0.1, 0.5, 0.9)


def _summarize_sources(per_part: list[dict], lo: float, hi: float) -> dict:
    """Per source and side (chosen / not chosen): docs and score quantiles (bin centres)."""
    merged: dict = {}
    tokens: dict = {}
    for result in per_part:
        for source, sides in (result or {}).items():
            for side, (hist, n_tokens) in sides.items():
                slot = merged.setdefault(source, {}).setdefault(side, np.zeros(cut.BINS))
                slot += hist
                tokens[source, side] = tokens.get((source, side), 0) + n_tokens
    centres = lo + (np.arange(cut.BINS) + 0.5) * (hi - lo) / cut.BINS
    summary = {}
    for source, sides in sorted(merged.items()):
        summary[source] = {}
        for side in ("chosen", "not_chosen"):
            hist = sides.get(side, np.zeros(cut.BINS))
            n = int(hist.sum())
            entry = {"docs": n, "tokens": tokens.get((source, side), 0)}
            if n:
                cdf = np.cumsum(hist) / n
                for q in QUANTILES:
                    entry[f"p{int(q * 100)}"] = float(centres[np.searchsorted(cdf, q)])
            summary[source][side] = entry
    return summary
