"""The report's counts, computed file by file on the workers and added up there.

One pass over the ledger files gives every count the report shows (rows per stage, action
and reason; the first rows of each reason; languages and quality scores of removed
documents; near-duplicate cluster sizes), one pass over the quality stage's output gives
the kept documents' scores, one over OUT/curated their languages. Every partial result is
a dict of Counters (plus the first example rows), merged in file order, so the `curate`
process receives aggregates whose size depends on the number of stages, reasons, sources,
languages and histogram bins, never on the number of documents.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd

from curation.documents import REMOVED
from curation.storage import out_path, parquet_file, read_parquet_table

EXAMPLES_PER_REASON = 3
SCORE_BINS = np.linspace(0.0, 1.0, 41)  # the quality histogram's edges
LEDGER_COLUMNS = ["id", "source", "stage", "action", "reason", "detail"]


def _read(path: str, columns: list[str]) -> pd.DataFrame:
    """Columns of one parquet file in OUT (a local path or an fsspec URL)."""
    return read_parquet_table(path, columns=columns).to_pandas()


def _details(rows: pd.DataFrame) -> list[dict]:
    return [json.loads(d) for d in rows["detail"]]


def _score_counts(sources, scores, fate: str) -> Counter:
    """(source, fate, bin) -> documents, and (source, fate, "sum") -> the scores' sum."""
    counts = Counter()
    frame = pd.DataFrame({"source": sources, "score": np.asarray(scores, dtype=np.float64)})
    for source, group in frame.groupby("source", sort=True):
        hist, _ = np.histogram(group["score"], bins=SCORE_BINS)
        counts.update({(source, fate, b): int(n) for b, n in enumerate(hist) if n})
        counts[(source, fate, "sum")] += float(group["score"].sum())
    return counts


def ledger_counts(path: str) -> dict:
    """The report's counts of one ledger file."""
    ledger = _read(path, LEDGER_COLUMNS)
    name = out_path(path).name
    reasons = Counter(zip(ledger["stage"], ledger["action"], ledger["reason"], strict=True))
    firsts = ledger.groupby(["stage", "reason"], sort=False).head(EXAMPLES_PER_REASON)
    examples: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for stage, reason, doc_id, detail in zip(firsts["stage"], firsts["reason"], firsts["id"],
                                             firsts["detail"], strict=True):
        examples.setdefault((stage, reason), []).append((doc_id, detail, name))
    removed = ledger[ledger["action"] == REMOVED]
    language = removed[removed["stage"] == "language"]
    quality = removed[removed["stage"] == "quality"]
    fuzzy = removed[removed["stage"] == "fuzzy_dedup"]
    quality_scores = [d.get("score", np.nan) for d in _details(quality)]
    return {
        "reasons": reasons, "examples": examples,
        "languages_removed": Counter(d.get("lang") for d in _details(language)
                                     if d.get("lang") is not None),
        "scores": _score_counts(quality["source"], quality_scores, "removed"),
        "cluster_rows": Counter(d["cluster_size"] for d in _details(fuzzy)
                                if "cluster_size" in d),
    }


def kept_scores(path: str) -> dict:
    """Scores of the documents the quality stage kept (one of its output partitions)."""
    kept = _read(path, ["source", "quality_score"])
    return {"scores": _score_counts(kept["source"], kept["quality_score"], "kept")}


def curated_languages(path: str) -> dict:
    """Detected languages of one curated partition (nothing when it has no `lang`)."""
    if "lang" not in parquet_file(path).schema_arrow.names:
        return {}
    return {"languages_curated": Counter(_read(path, ["lang"])["lang"])}


def merge(parts: list[dict]) -> dict:
    """Counters added up; example rows concatenated in order, the first few kept."""
    total: dict = {}
    for part in parts:
        for key, value in part.items():
            if key == "examples":
                merged = total.setdefault(key, {})
                for reason, rows in value.items():
                    kept = merged.setdefault(reason, [])
                    kept.extend(rows[:EXAMPLES_PER_REASON - len(kept)])
            else:
                total.setdefault(key, Counter()).update(value)
    return total


def texts_of(item: tuple[str, list[str]]) -> dict[tuple[str, str], str]:
    """(partition, ids) -> {(partition, id): text}: the examples' texts as their stage
    received them."""
    path, ids = item
    docs = _read(path, ["id", "text"])
    docs = docs[docs["id"].isin(ids)]
    return {(path, doc_id): text for doc_id, text in zip(docs["id"], docs["text"], strict=True)}


def merge_texts(parts: list[dict]) -> dict:
    return {k: v for part in parts for k, v in part.items()}
