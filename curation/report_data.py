"""The facts behind the curation report, read back from a `curate run` OUT folder.

Everything here is recomputed from what the run left on disk (stage manifests, the
ledger, curated partitions, token manifests, the frozen spec), so a report can be rebuilt
at any time and agrees with the files a user can open. A fact whose stage did not run is
None or empty, and the report leaves its section out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from curation.documents import REMOVED
from curation.layout import STEP_MANIFEST as MANIFEST
from curation.shards import MANIFEST_NAME
from curation.storage import out_path, parquet_file, read_parquet_table

EXCERPT_CHARS = 160


@dataclass(frozen=True)
class StageRun:
    """One finished stage folder: OUT/stages/NN_<name>/ and its manifest."""

    name: str
    folder: Path
    manifest: dict

    @property
    def partitions(self) -> list[Path]:
        return [self.folder / p for p in self.manifest["partitions"]]


def stage_runs(out: Path) -> list[StageRun]:
    """Finished stages in the order they ran (the folder number)."""
    runs = []
    for path in sorted((out_path(out) / "stages").glob(f"*/{MANIFEST}")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("complete"):
            runs.append(StageRun(manifest["stage"], path.parent, manifest))
    return runs


def frozen_spec(out: Path) -> dict:
    path = out_path(out) / "spec.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def read_parquet_columns(files: list[Path], columns: list[str],
                         ids: list[str] | None = None) -> pd.DataFrame:
    """Selected columns of many parquet files (optionally only rows whose id is in `ids`)."""
    tables = []
    for path in files:
        table = read_parquet_table(path, columns=columns)
        if ids is not None:
            table = table.filter(pc.is_in(table["id"], pa.array(ids, pa.string())))
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=columns)
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def read_ledger(out: Path) -> pd.DataFrame:
    """OUT/ledger as one frame, rows in stage order (the file names start with NN_)."""
    files = sorted((out_path(out) / "ledger").glob("*.parquet"))
    frame = read_parquet_columns(files, ["id", "source", "stage", "action", "reason", "detail"])
    return frame.reset_index(drop=True)


def funnel(out: Path) -> pd.DataFrame:
    """One row per (stage, source) from the stage manifests: documents and bytes in/out."""
    rows = []
    for run in stage_runs(out):
        for source, counts in run.manifest["totals"]["by_source"].items():
            rows.append({"stage": run.name, "source": source, **counts})
    return pd.DataFrame(rows, columns=["stage", "source", "docs_in", "kept", "removed",
                                       "modified", "bytes_in", "bytes_out"])


def token_totals(out: Path) -> dict[str, dict]:
    """Per source: documents and tokens in its token shards (OUT/tokens/<source>/manifest.json)."""
    totals = {}
    for path in sorted((out_path(out) / "tokens").glob(f"*/{MANIFEST_NAME}")):
        manifest = json.loads(path.read_text(encoding="utf-8"))
        totals[path.parent.name] = {"documents": int(manifest["documents"]),
                                    "tokens": int(manifest["tokens"])}
    return totals


def reason_counts(ledger: pd.DataFrame) -> pd.DataFrame:
    """Ledger rows per (stage, action, reason), stages in run order, largest reasons first."""
    if ledger.empty:
        return pd.DataFrame(columns=["stage", "action", "reason", "documents"])
    order = {stage: k for k, stage in enumerate(dict.fromkeys(ledger["stage"]))}
    counts = ledger.groupby(["stage", "action", "reason"], sort=False).size()
    counts = counts.rename("documents").reset_index()
    counts["order"] = counts["stage"].map(order)
    counts = counts.sort_values(["order", "action", "documents", "reason"],
                                ascending=[True, False, False, True])
    return counts.drop(columns="order").reset_index(drop=True)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def stage_input_texts(out: Path, stage: str, ids: list[str]) -> dict[str, str]:
    """Texts of `ids` as the stage `stage` received them (its input partitions)."""
    runs = stage_runs(out)
    names = [run.name for run in runs]
    if stage not in names or names.index(stage) == 0:
        return {}
    previous = runs[names.index(stage) - 1]
    found = read_parquet_columns(previous.partitions, ["id", "text"], ids=ids)
    return dict(zip(found["id"], found["text"], strict=True))


def reason_examples(out: Path, ledger: pd.DataFrame, per_reason: int = 3) -> dict:
    """(stage, reason) -> [(id, what happened)]: the first ledger rows of each reason.

    Each example shows the ledger detail (the measured value, the rule) and the start of
    the document's text as the stage received it; malformed records of the read step have
    no text, and their detail names the file and line.
    """
    examples: dict[tuple[str, str], list[tuple[str, str]]] = {}
    firsts = ledger.groupby(["stage", "reason"], sort=False).head(per_reason)
    for stage, rows in firsts.groupby("stage", sort=False):
        texts = stage_input_texts(out, stage, rows["id"].tolist())
        for doc_id, reason, detail in zip(rows["id"], rows["reason"], rows["detail"],
                                          strict=True):
            shown = excerpt(detail, 120)
            if doc_id in texts:
                shown += f" — “{excerpt(texts[doc_id])}”"
            examples.setdefault((stage, reason), []).append((doc_id, shown))
    return examples


def _details(ledger: pd.DataFrame, stage: str, action: str = REMOVED) -> pd.DataFrame:
    rows = ledger[(ledger["stage"] == stage) & (ledger["action"] == action)]
    details = pd.DataFrame([json.loads(d) for d in rows["detail"]], index=rows.index)
    return pd.concat([rows.drop(columns="detail"), details], axis=1)


def curated_columns(out: Path, columns: list[str]) -> pd.DataFrame:
    files = sorted((out_path(out) / "curated").glob("*/*.parquet"))
    present = [c for c in columns if files and c in parquet_file(files[0]).schema_arrow.names]
    return read_parquet_columns(files, present) if present else pd.DataFrame()


def languages(out: Path, ledger: pd.DataFrame) -> pd.DataFrame | None:
    """Per language: curated documents and documents the language stage removed."""
    curated = curated_columns(out, ["lang"])
    if "lang" not in curated.columns:
        return None
    removed = _details(ledger, "language")
    table = pd.DataFrame({
        "curated": curated["lang"].value_counts(),
        "removed": removed["lang"].value_counts() if "lang" in removed else pd.Series(dtype=int),
    }).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table = table.sort_values(["total", "curated"], ascending=False).drop(columns="total")
    return table.rename_axis("lang").reset_index()


@dataclass
class QualityScores:
    """Every scored document with its fate, and the keep rule that decided it."""

    scores: pd.DataFrame  # source, score, kept (bool), exempt (bool)
    rule: str  # "threshold" or "pareto"
    threshold: float | None
    alpha: float


def quality_scores(out: Path, ledger: pd.DataFrame) -> QualityScores | None:
    runs = {run.name: run for run in stage_runs(out)}
    if "quality" not in runs:
        return None
    config = runs["quality"].manifest["params"]
    config = config.get("config", config)
    kept = read_parquet_columns(runs["quality"].partitions, ["source", "quality_score"])
    kept = kept.rename(columns={"quality_score": "score"}).assign(kept=True)
    removed = _details(ledger, "quality")
    removed = pd.DataFrame({"source": removed.get("source", pd.Series(dtype=str)),
                            "score": removed.get("score", pd.Series(dtype=float)),
                            "kept": False})
    scores = pd.concat([kept, removed], ignore_index=True)
    scores["exempt"] = scores["source"].isin(
        runs["quality"].manifest["totals"].get("skipped_sources", []))
    threshold = config.get("threshold")
    return QualityScores(scores, "pareto" if threshold is None else "threshold",
                         threshold, float(config.get("alpha", 9.0)))


def pareto_keep_probability(score: np.ndarray, alpha: float) -> np.ndarray:
    """P(keep) under GPT-3's rule, keep when pareto(alpha) > 1 - score: (2 - score)^-alpha."""
    return (2.0 - np.asarray(score, dtype=np.float64)) ** -alpha


def cluster_sizes(ledger: pd.DataFrame) -> np.ndarray | None:
    """Size of every near-duplicate cluster that lost a document (one entry per cluster)."""
    removed = _details(ledger, "fuzzy_dedup")
    if removed.empty or "component" not in removed:
        return None
    return removed.groupby("component")["cluster_size"].first().to_numpy(dtype=np.int64)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def blend_table(out: Path, train_tokens: int | None = None) -> pd.DataFrame | None:
    """The MT-NLG Table 2 columns per source: tokens, weight, epochs.

    Weights come from the frozen spec, normalised; a spec that gives epochs instead has
    weights proportional to epochs x tokens. `train_tokens` is the number of tokens the
    trainer will see; by default one pass over a corpus-sized blend (the sum of tokens),
    or, with epochs, what those epochs add up to. epochs = weight x train_tokens / tokens.
    """
    tokens = token_totals(out)
    sources = frozen_spec(out).get("sources") or []
    if not tokens or not sources:
        return None
    names = [s["name"] for s in sources]
    counts = np.array([tokens.get(n, {}).get("tokens", 0) for n in names], dtype=np.float64)
    given_weights = [s.get("weight") for s in sources]
    if any(w is not None for w in given_weights):
        weights = np.array([w or 0.0 for w in given_weights], dtype=np.float64)
        weights /= weights.sum()
        seen = float(counts.sum())
    else:
        epochs = np.array([s.get("epochs") or 1.0 for s in sources], dtype=np.float64)
        seen = float((epochs * counts).sum())
        weights = epochs * counts / seen if seen else np.zeros_like(counts)
    if train_tokens is not None:
        seen = float(train_tokens)
    with np.errstate(divide="ignore", invalid="ignore"):
        epochs = np.where(counts > 0, weights * seen / counts, np.nan)
    return pd.DataFrame({"source": names, "tokens": counts.astype(np.int64),
                         "weight": weights, "epochs": epochs}).assign(train_tokens=int(seen))
