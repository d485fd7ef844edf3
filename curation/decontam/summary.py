"""`OUT/decontamination.json`: what decontamination took out, per task.

Built from the ledger rather than from the stage, because the per-document facts
(cuts, spans, drops) are only known on the workers and the ledger is where they land.
Each ledger file is summarised on a worker and the partial summaries are added up there
(curation.aggregate): the `curate` process receives one summary, whatever the corpus size.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from curation import storage
from curation.aggregate import map_reduce, result
from curation.atomic import write_text_atomic

STAGE = "decontaminate"
COLUMNS = ["id", "stage", "action", "detail"]


def partial_summary(ledger: pd.DataFrame | str) -> dict:
    """Counts of one ledger file (or frame): per task documents hit and dropped, characters
    removed and n-gram matches; documents modified and dropped overall."""
    if not isinstance(ledger, pd.DataFrame):
        ledger = storage.read_parquet_table(ledger, columns=COLUMNS,
                                            filters=[("stage", "==", STAGE)]).to_pandas()
    rows = ledger[ledger["stage"] == STAGE]
    hit, dropped, chars = Counter(), Counter(), Counter()
    ngrams: dict[str, Counter] = {}
    for action, detail in zip(rows["action"], rows["detail"], strict=True):
        info = json.loads(detail)
        doc_tasks = set()
        for cut in info.get("cuts", []):
            for task in cut["tasks"]:
                doc_tasks.add(task)
                ngrams.setdefault(task, Counter())[cut["ngram"]] += 1
                if action != "removed":
                    chars[task] += cut["removed"][1] - cut["removed"][0]
        for task in doc_tasks:
            hit[task] += 1
            if action == "removed":
                dropped[task] += 1
                chars[task] += info.get("chars", 0)
    return {"hit": hit, "dropped": dropped, "chars": chars, "ngrams": ngrams,
            "modified": int((rows["action"] == "modified").sum()),
            "removed": int((rows["action"] == "removed").sum())}


def merge_summaries(parts: list[dict]) -> dict:
    """The sum of partial summaries; n-grams keep the order they were first seen in."""
    total = {"hit": Counter(), "dropped": Counter(), "chars": Counter(), "ngrams": {},
             "modified": 0, "removed": 0}
    for part in parts:
        for key in ("hit", "dropped", "chars"):
            total[key].update(part[key])
        for task, counts in part["ngrams"].items():
            total["ngrams"].setdefault(task, Counter()).update(counts)
        total["modified"] += part["modified"]
        total["removed"] += part["removed"]
    return total


def summarize_decontamination(ledger: pd.DataFrame | str | Path, out_path: str | Path,
                              top: int = 20, client=None, task_records: dict | None = None
                              ) -> dict:
    """Per task: documents hit, modified and dropped, characters removed, top n-grams.

    `ledger` is a ledger DataFrame or a parquet file/directory of ledger rows (summarised on
    `client`'s workers when given). A dropped document's whole length counts as removed for
    every task that matched it. `task_records` (name -> ResolvedTask.record()) go in as
    `task_entries`: every task checked, with its files' digests, so `pretrain eval` knows
    which test set the corpus was cleaned against, hit or not.
    """
    if isinstance(ledger, pd.DataFrame):
        total = merge_summaries([partial_summary(ledger)])
    else:
        path = storage.out_path(ledger)  # the parameter `out_path` is the JSON's
        files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        total = result(client, map_reduce(client, partial_summary, [str(f) for f in files],
                                          merge_summaries, desc="decontamination summary"))
    summary = {
        "tasks": {
            task: {
                "documents_hit": total["hit"][task],
                "documents_dropped": total["dropped"][task],
                "documents_modified": total["hit"][task] - total["dropped"][task],
                "characters_removed": int(total["chars"][task]),
                "top_ngrams": [{"ngram": g, "count": c}
                               for g, c in total["ngrams"].get(task, Counter()).most_common(top)],
            }
            for task in sorted(total["hit"])
        },
        "documents_modified": total["modified"],
        "documents_dropped": total["removed"],
    }
    if task_records is not None:
        summary["task_entries"] = task_records
    write_text_atomic(out_path, json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
