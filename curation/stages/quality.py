"""The `quality` stage: score every document with the fastText classifier, sample on it.

`prepare` makes sure a model exists: the spec's `model` path, or one trained from the
positive and negative sources into OUT/quality/ (reused on rerun when its training
parameters and its training sample are the same). The training sample is a bottom-k by
seeded id hash per class, so it is the same whatever the partitioning. `run` scores a
partition in one batched call, adds `quality_score` and applies the keep rule. Sources
out of the stage's scope (`exempt`, or not in `only`) are scored and never removed; the
training sample is drawn from the positive and negative sources whatever the scope.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from curation.aggregate import result
from curation.bottom_k import bottom_k_rows
from curation.quality.model import (
    load_model,
    positive_probability,
    preprocess,
    train_quality_model,
)
from curation.quality.sampling import keep_decisions
from curation.stage_context import ClusterStageContext
from curation.stages.base import Decided, Removed, ScopedConfig, Stage
from curation.storage import out_path, resolved

MODEL_POINTER = "model.json"
# Below this held-out AUC the classifier barely ranks the positive sources above the
# negative ones, and its keep rule removes documents almost at random.
WEAK_AUC = 0.6


class QualityConfig(ScopedConfig):
    """`threshold` given: keep when score >= threshold; else GPT-3's Pareto rule with
    `alpha`. Setting both is an error, so the rule in force is never ambiguous."""

    positive: list[str] = Field(min_length=1)
    negative: list[str] = Field(min_length=1)
    alpha: float = Field(9.0, gt=0)
    threshold: float | None = Field(None, ge=0, le=1)
    model: str | None = None
    epoch: int = Field(10, ge=1)
    lr: float = Field(0.1, gt=0)
    word_ngrams: int = Field(2, ge=1)
    dim: int = Field(32, ge=1)
    bucket: int = Field(500_000, ge=1)
    min_count: int = Field(1, ge=1)
    max_docs_per_class: int = Field(50_000, ge=2)
    # Train on as many negatives as positives: an imbalanced sample shifts every score
    # towards the larger class, and a threshold or Pareto rule then means something else.
    balance: bool = True
    holdout: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_rule(self) -> QualityConfig:
        if self.threshold is not None and "alpha" in self.model_fields_set:
            raise ValueError("quality: give `alpha` (Pareto sampling) or `threshold`, not both")
        both = set(self.positive) & set(self.negative)
        if both:
            raise ValueError(f"quality: sources both positive and negative: {sorted(both)}")
        return self

    def missing_files(self, base_dir: Path) -> list[str]:
        if self.model and not (Path(base_dir) / self.model).is_file():
            return [f"model: no file at {Path(base_dir) / self.model}"]
        return []

    @property
    def rule(self) -> str:
        if self.threshold is not None:
            return f"threshold({self.threshold:g})"
        return f"pareto(alpha={self.alpha:g})"

    def training_params(self, seed: int) -> dict:
        keys = ("positive", "negative", "epoch", "lr", "word_ngrams", "dim", "bucket",
                "min_count", "max_docs_per_class", "holdout", "balance")
        return {"seed": seed, **{k: getattr(self, k) for k in keys}}


def _params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def gather_training_texts(ctx, config: QualityConfig, seed: int) -> tuple[list[str], list[str]]:
    """A bounded, partitioning-independent sample of positive and negative texts (in the
    order of their id hashes, so the same data give the same lists): the bottom-k of each
    class by seeded id hash, drawn and merged on the cluster, whatever the stage's scope."""
    rows = result(ctx.client, bottom_k_rows(
        ctx.client, ctx.partitions, [list(config.negative), list(config.positive)], seed,
        "quality-train", config.max_docs_per_class, ["text"], desc="quality: training sample"))
    classes = [[text for _, _, text in rows[cls]] for cls in (0, 1)]
    if config.balance:
        n = min(len(c) for c in classes)
        classes = [c[:n] for c in classes]  # still the smallest hashes: partition-independent
    return classes[1], classes[0]


def training_data_fingerprint(positive: list[str], negative: list[str]) -> str:
    """sha256 of the training sample, class by class, text by text, in sample order."""
    digest = hashlib.sha256()
    for label, texts in (("positive", positive), ("negative", negative)):
        digest.update(f"{label}:{len(texts)}\n".encode())
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
    return digest.hexdigest()


def ensure_quality_model(ctx, config: QualityConfig, seed: int, force: bool = False) -> dict:
    """Train into OUT/quality/ unless the model there was trained with the same parameters
    on the same sample (its key hashes both: same parameters over changed sources is a
    different model)."""
    quality_dir = out_path(ctx.out) / "quality"
    params = config.training_params(seed)
    metrics_path = quality_dir / "metrics.json"
    positive, negative = gather_training_texts(ctx, config, seed)
    key = _params_hash({**params, "data": training_data_fingerprint(positive, negative)})
    if not force and (quality_dir / "model.bin").exists() and metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("params_hash") == key:
            return metrics
    metrics = train_quality_model(
        positive, negative, quality_dir, seed,
        epoch=config.epoch, lr=config.lr, word_ngrams=config.word_ngrams, dim=config.dim,
        bucket=config.bucket, min_count=config.min_count, holdout=config.holdout,
        extra_metrics={"params": params, "params_hash": key},
    )
    print(f"quality classifier (held out): precision {metrics['precision']:.3f}, "
          f"recall {metrics['recall']:.3f}, AUC {metrics['auc']:.3f}, counts {metrics['counts']}")
    if (warning := weak_classifier_warning(metrics)) is not None:
        print(f"quality: warning: {warning}", file=sys.stderr)
    return metrics


def weak_classifier_warning(metrics: dict) -> str | None:
    """A sentence when the held-out AUC is under WEAK_AUC (or could not be measured)."""
    auc = metrics.get("auc")
    if auc is not None and auc >= WEAK_AUC:
        return None
    return (f"the classifier's held-out AUC is {auc:.3f} (under {WEAK_AUC}): it can hardly tell "
            "the positive sources from the negative ones, so its scores remove documents "
            "almost at random; check stages.quality.positive/negative, or train longer "
            "(epoch, lr)")


def train_quality(config: QualityConfig, spec, partitions, out, client, force=False) -> dict:
    """`curate train-quality`: train and save OUT/quality/model.bin from document partitions."""
    out = out_path(out)
    ctx = ClusterStageContext(spec, out, out / "quality", partitions, client)
    return ensure_quality_model(ctx, config, spec.seed, force=force)


class QualityStage(Stage):
    name = "quality"
    config_class = QualityConfig

    def _given_model(self) -> Path | None:
        if self.config.model is None:
            return None
        path = Path(self.config.model)
        if not path.is_absolute():
            path = Path(getattr(self.spec, "base_dir", ".")) / path
        if not path.is_file():
            raise FileNotFoundError(f"quality.model: no fastText model at {path}")
        return path

    def params(self) -> dict:
        given = self._given_model()
        digest = hashlib.sha256(given.read_bytes()).hexdigest() if given else None
        return {**super().params(), "seed": self.spec.seed, "model_sha256": digest}

    def prepare(self, ctx) -> None:
        model = self._given_model()
        if model is None:
            ensure_quality_model(ctx, self.config, self.spec.seed)
            model = out_path(ctx.out) / "quality" / "model.bin"
        workdir = out_path(ctx.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / MODEL_POINTER).write_text(json.dumps({"path": str(resolved(model))}))

    def annotate(self, docs: pd.DataFrame, workdir: Path) -> pd.DataFrame:
        """Every document gets its `quality_score`; out of scope it is only scored."""
        pointer = out_path(workdir) / MODEL_POINTER
        if not pointer.exists():
            raise FileNotFoundError(f"{pointer}: quality.prepare has not run")
        model = load_model(json.loads(pointer.read_text())["path"])
        return docs.assign(quality_score=positive_probability(model, preprocess(docs["text"])))

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided:
        docs = self.annotate(docs.reset_index(drop=True), workdir)
        scores = docs["quality_score"].to_numpy()
        ids = docs["id"].astype(str).tolist()
        keep, draws = keep_decisions(scores, ids, self.spec.seed, self.config.alpha,
                                     self.config.threshold)
        removed = np.flatnonzero(~keep)
        details = [
            {"score": round(float(scores[i]), 6), "rule": self.config.rule,
             **({"draw": round(float(draws[i]), 6)} if draws is not None else {})}
            for i in removed
        ]
        return Decided(docs[keep], [Removed(docs.iloc[removed], "low_quality", details)])
