"""The facts behind the curation report, read back from a `curate run` OUT folder.

Everything here is recomputed from what the run left on disk (stage manifests, the
ledger, curated partitions, token manifests, the frozen spec), so a report can be rebuilt
at any time and agrees with the files a user can open. A fact whose stage did not run is
None or empty, and the report leaves its section out. Facts about documents are counted
file by file on the cluster (curation.report.aggregates); here they arrive as aggregates.
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

from curation.aggregate import map_reduce, result
from curation.layout import STEP_MANIFEST as MANIFEST
from curation.report import aggregates as agg
from curation.shards import MANIFEST_NAME
from curation.storage import out_path, read_parquet_table

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


def gather_counts(out: Path, client=None) -> dict:
    """Every count the report shows about documents, from the ledger, the quality stage's
    output and OUT/curated, aggregated on `client`'s workers (here when None)."""
    out = out_path(out)
    passes = [(agg.ledger_counts, sorted((out / "ledger").glob("*.parquet"))),
              (agg.curated_languages, sorted((out / "curated").glob("*/*.parquet")))]
    runs = {run.name: run for run in stage_runs(out)}
    if "quality" in runs:
        passes.append((agg.kept_scores, runs["quality"].partitions))
    pending = [map_reduce(client, fn, [str(f) for f in files], agg.merge, desc="report")
               for fn, files in passes]
    return agg.merge([result(client, p) for p in pending])


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


def reason_counts(counts: dict) -> pd.DataFrame:
    """Ledger rows per (stage, action, reason), stages in run order, largest reasons first."""
    reasons = counts.get("reasons", {})
    if not reasons:
        return pd.DataFrame(columns=["stage", "action", "reason", "documents"])
    frame = pd.DataFrame([(*key, n) for key, n in reasons.items()],
                         columns=["stage", "action", "reason", "documents"])
    order = {stage: k for k, stage in enumerate(dict.fromkeys(frame["stage"]))}
    frame["order"] = frame["stage"].map(order)
    frame = frame.sort_values(["order", "action", "documents", "reason"],
                              ascending=[True, False, False, True])
    return frame.drop(columns="order").reset_index(drop=True)


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


def _input_partition(runs: list[StageRun], ledger_file: str) -> Path | None:
    """The partition a ledger file's stage read (OUT/ledger/NN_<stage>-part-K.parquet:
    partition K of the stage before); None for the read step, which has no input text."""
    folder, _, part = ledger_file.partition("-")
    names = [run.folder.name for run in runs]
    if folder not in names or names.index(folder) == 0 or not part.startswith("part-"):
        return None
    previous = runs[names.index(folder) - 1].partitions
    k = int(part.removeprefix("part-").split(".")[0])
    return previous[k] if k < len(previous) else None


def reason_examples(out: Path, counts: dict, client=None) -> dict:
    """(stage, reason) -> [(id, what happened)]: the first ledger rows of each reason.

    Each example shows the ledger detail (the measured value, the rule) and the start of
    the document's text as the stage received it, read on the cluster from the one
    partition it was in; malformed records of the read step have no text, and their
    detail names the file and line.
    """
    runs = stage_runs(out)
    wanted: dict[str, list[str]] = {}
    for rows in counts.get("examples", {}).values():
        for doc_id, _, ledger_file in rows:
            partition = _input_partition(runs, ledger_file)
            if partition is not None:
                wanted.setdefault(str(partition), []).append(doc_id)
    texts = result(client, map_reduce(client, agg.texts_of, sorted(wanted.items()),
                                      agg.merge_texts)) if wanted else {}
    examples: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, rows in counts.get("examples", {}).items():
        for doc_id, detail, ledger_file in rows:
            shown = excerpt(detail, 120)
            text = texts.get((str(_input_partition(runs, ledger_file)), doc_id))
            if text is not None:
                shown += f" — “{excerpt(text)}”"
            examples.setdefault(key, []).append((doc_id, shown))
    return examples


def languages(counts: dict) -> pd.DataFrame | None:
    """Per language: curated documents and documents the language stage removed."""
    if "languages_curated" not in counts:
        return None
    table = pd.DataFrame({
        "curated": pd.Series(counts["languages_curated"], dtype="int64"),
        "removed": pd.Series(counts.get("languages_removed", {}), dtype="int64"),
    }).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table = table.sort_values(["total", "curated"], ascending=False).drop(columns="total")
    return table.rename_axis("lang").reset_index()


@dataclass
class QualityScores:
    """Scored documents per source and fate, and the keep rule that decided them."""

    per_source: pd.DataFrame  # source, scored, kept, removed, exempt (bool), mean
    histograms: dict[str, np.ndarray]  # "kept" (not exempt), "removed", "exempt": per bin
    rule: str  # "threshold" or "pareto"
    threshold: float | None
    alpha: float


def quality_scores(out: Path, counts: dict) -> QualityScores | None:
    runs = {run.name: run for run in stage_runs(out)}
    if "quality" not in runs:
        return None
    config = runs["quality"].manifest["params"]
    config = config.get("config", config)
    exempt = set(runs["quality"].manifest["totals"].get("skipped_sources", []))
    scores = counts.get("scores", {})
    bins = len(agg.SCORE_BINS) - 1
    histograms = {fate: np.zeros(bins, dtype=np.int64) for fate in ("kept", "removed", "exempt")}
    rows = []
    for source in sorted({key[0] for key in scores}):
        n = {fate: np.array([scores.get((source, fate, b), 0) for b in range(bins)])
             for fate in ("kept", "removed")}
        histograms["exempt" if source in exempt else "kept"] += n["kept"]
        histograms["removed"] += n["removed"]
        scored = int(n["kept"].sum() + n["removed"].sum())
        total = sum(scores.get((source, fate, "sum"), 0.0) for fate in ("kept", "removed"))
        rows.append({"source": source, "scored": scored, "kept": int(n["kept"].sum()),
                     "removed": int(n["removed"].sum()), "exempt": source in exempt,
                     "mean": total / scored if scored else np.nan})
    threshold = config.get("threshold")
    return QualityScores(pd.DataFrame(rows, columns=["source", "scored", "kept", "removed",
                                                     "exempt", "mean"]),
                         histograms, "pareto" if threshold is None else "threshold",
                         threshold, float(config.get("alpha", 9.0)))


def pareto_keep_probability(score: np.ndarray, alpha: float) -> np.ndarray:
    """P(keep) under GPT-3's rule, keep when pareto(alpha) > 1 - score: (2 - score)^-alpha."""
    return (2.0 - np.asarray(score, dtype=np.float64)) ** -alpha


def cluster_sizes(counts: dict) -> pd.Series | None:
    """Near-duplicate clusters that lost documents, per cluster size (keeper included): a
    cluster of size s left s - 1 removed rows, each carrying s."""
    rows = counts.get("cluster_rows", {})
    if not rows:
        return None
    sizes = pd.Series({int(s): n // (int(s) - 1) for s, n in rows.items() if int(s) > 1},
                      dtype="int64").sort_index()
    return sizes.rename_axis("size").rename("clusters")


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
