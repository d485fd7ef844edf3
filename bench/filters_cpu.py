"""CPU milliseconds per document of the normalize and heuristics stages, one process.

Runs both stages (the vs_datatrove.py configuration: every heuristics family, Gopher
repetition counting repeats after the first) on the first documents of one shard of a
bench/text_corpus.py corpus, best of `--repeat`, and prints one JSON line. To compare two
source trees, run it with PYTHONPATH set to each, alternating:

    PYTHONPATH=/tmp/main-src .venv/bin/python bench/filters_cpu.py /tmp/c50k/shard-001.jsonl
    .venv/bin/python bench/filters_cpu.py /tmp/c50k/shard-001.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

import curation
from curation.stages.heuristics import HeuristicsConfig, HeuristicsStage
from curation.stages.normalize import NormalizeConfig, NormalizeStage

CONFIG = {"gopher_quality": {}, "c4": {}, "gopher_repetition": {"dup_ngram_occurrences": "repeats"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shard", type=Path, help="a JSONL shard of bench/text_corpus.py")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with open(args.shard, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            rows.append({"id": record["id"], "source": "bench", "text": record["text"],
                         "meta": "{}"})
            if len(rows) >= args.docs:
                break
    docs = pd.DataFrame(rows)
    normalize = NormalizeStage(NormalizeConfig(), None)
    heuristics = HeuristicsStage(HeuristicsConfig.model_validate(CONFIG), None)
    best = {"normalize": float("inf"), "heuristics": float("inf")}
    for _ in range(args.repeat):
        started = time.process_time()
        normalized = normalize.run(docs, 0, Path("."))
        best["normalize"] = min(best["normalize"], time.process_time() - started)
        started = time.process_time()
        judged = heuristics.run(normalized.kept, 0, Path("."))
        best["heuristics"] = min(best["heuristics"], time.process_time() - started)
    print(json.dumps({
        "source": str(Path(curation.__file__).parent), "docs": len(docs),
        "normalize_ms_per_doc": round(best["normalize"] / len(docs) * 1e3, 4),
        "heuristics_ms_per_doc": round(best["heuristics"] / len(normalized.kept) * 1e3, 4),
        "kept": len(judged.kept)}))


if __name__ == "__main__":
    main()
