"""Counting what every stage kept, removed and modified, per source: the run's accounting."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curation.documents import MODIFIED, REMOVED

COUNTS = ("docs_in", "kept", "removed", "modified", "bytes_in", "bytes_out")


class AccountingError(RuntimeError):
    """A stage broke the contract: documents in != kept + removed."""


def text_bytes(docs: pd.DataFrame) -> pd.Series:
    """UTF-8 length of each document's text, computed by Arrow without Python strings."""
    if docs.empty:
        return pd.Series([], dtype="int64")
    lengths = pc.binary_length(pa.array(docs["text"], type=pa.string()))
    return pd.Series(lengths.to_numpy(zero_copy_only=False), index=docs.index, dtype="int64")


def partition_stats(name: str, docs_in: pd.DataFrame | None, kept: pd.DataFrame,
                    ledger: pd.DataFrame) -> dict:
    """Counts for one partition of one stage, in total and per source.

    `docs_in` is None for the read step, whose input is raw records: there, documents in
    are the kept documents plus the removed records.
    """
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    removed = ledger[ledger["action"] == REMOVED]
    modified = ledger[ledger["action"] == MODIFIED]
    for column, frame in (("kept", kept), ("removed", removed), ("modified", modified)):
        for source, n in frame["source"].value_counts().items():
            by_source[str(source)][column] += int(n)
    if docs_in is None:
        for counts in by_source.values():
            counts["docs_in"] = counts["kept"] + counts["removed"]
    else:
        for source, n in docs_in["source"].value_counts().items():
            by_source[str(source)]["docs_in"] += int(n)
        for source, b in text_bytes(docs_in).groupby(docs_in["source"]).sum().items():
            by_source[str(source)]["bytes_in"] += int(b)
    for source, b in text_bytes(kept).groupby(kept["source"]).sum().items():
        by_source[str(source)]["bytes_out"] += int(b)
    if docs_in is None:
        for counts in by_source.values():
            counts["bytes_in"] = counts["bytes_out"]
    total = {c: sum(s[c] for s in by_source.values()) for c in COUNTS}
    return {"partition": name, **total, "by_source": dict(sorted(by_source.items()))}


def check_accounting(stage: str, part: int, docs_in: pd.DataFrame, kept: pd.DataFrame,
                     ledger: pd.DataFrame) -> None:
    """Every input document is kept or removed, never both, never lost or invented."""
    where = f"stage {stage!r}, partition {part}"
    ids_in = pd.Index(docs_in["id"])
    removed_ids = pd.Index(ledger.loc[ledger["action"] == REMOVED, "id"])
    modified_ids = pd.Index(ledger.loc[ledger["action"] == MODIFIED, "id"])
    kept_ids = pd.Index(kept["id"])
    problems = []
    if len(kept) + len(removed_ids) != len(docs_in):
        problems.append(f"{len(docs_in)} in != {len(kept)} kept + {len(removed_ids)} removed")
    if kept_ids.intersection(removed_ids).size:
        problems.append("documents both kept and removed")
    if not kept_ids.union(removed_ids).sort_values().equals(ids_in.sort_values()):
        problems.append("kept + removed ids differ from the input ids")
    if modified_ids.difference(kept_ids).size:
        problems.append("`modified` ledger rows for documents that were not kept")
    if problems:
        raise AccountingError(f"{where}: " + "; ".join(problems))


def add_stats(rows: list[dict]) -> dict:
    """Sum partition stats into one stage total (with per-source totals)."""
    total = dict.fromkeys(COUNTS, 0)
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for row in rows:
        for c in COUNTS:
            total[c] += row[c]
        for source, counts in row["by_source"].items():
            for c in COUNTS:
                by_source[source][c] += counts[c]
    return {**total, "by_source": dict(sorted(by_source.items()))}
