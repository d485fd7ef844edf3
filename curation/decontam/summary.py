"""`OUT/decontamination.json`: what decontamination took out, per task.

Built from the ledger rather than from the stage, because the per-document facts
(cuts, spans, drops) are only known on the workers and the ledger is where they land.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd

from curation.atomic import write_text_atomic
from curation.storage import read_parquet_table

STAGE = "decontaminate"


def summarize_decontamination(
    ledger: pd.DataFrame | str | Path, out_path: str | Path, top: int = 20
) -> dict:
    """Per task: documents hit, modified and dropped, characters removed, top n-grams.

    `ledger` is a ledger DataFrame or a parquet file/directory of ledger rows. A dropped
    document's whole length counts as removed for every task that matched it.
    """
    if not isinstance(ledger, pd.DataFrame):
        ledger = read_parquet_table(ledger).to_pandas()
    rows = ledger[ledger["stage"] == STAGE]
    hit: dict[str, set] = defaultdict(set)
    dropped: dict[str, set] = defaultdict(set)
    chars: Counter = Counter()
    ngrams: dict[str, Counter] = defaultdict(Counter)
    for doc_id, action, detail in zip(rows["id"], rows["action"], rows["detail"], strict=True):
        info = json.loads(detail)
        doc_tasks = set()
        for cut in info.get("cuts", []):
            for task in cut["tasks"]:
                doc_tasks.add(task)
                ngrams[task][cut["ngram"]] += 1
                if action != "removed":
                    chars[task] += cut["removed"][1] - cut["removed"][0]
        for task in doc_tasks:
            hit[task].add(doc_id)
            if action == "removed":
                dropped[task].add(doc_id)
                chars[task] += info.get("chars", 0)
    summary = {
        "tasks": {
            task: {
                "documents_hit": len(hit[task]),
                "documents_dropped": len(dropped[task]),
                "documents_modified": len(hit[task]) - len(dropped[task]),
                "characters_removed": int(chars[task]),
                "top_ngrams": [{"ngram": g, "count": c}
                               for g, c in ngrams[task].most_common(top)],
            }
            for task in sorted(hit)
        },
        "documents_modified": int((rows["action"] == "modified").sum()),
        "documents_dropped": int((rows["action"] == "removed").sum()),
    }
    write_text_atomic(out_path, json.dumps(summary, indent=2, ensure_ascii=False))
    return summary
