"""The heuristics stage on real text in eight languages: CPU time, and what the Gopher
stop-word rule removes with and without the document's detected language.

Reads ../shared/data/langid-sample.jsonl (Debian manual pages in en, es, it, pl, nl, ru,
sv, cs), repeated `--copies` times, as one partition; `lang` comes from the language
stage's own detector.

    .venv/bin/python bench/heuristics_languages.py [--copies 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.stages.heuristics import HeuristicsStage  # noqa: E402
from curation.stages.language import detect_languages  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "langid-sample.jsonl"
EVERY_FAMILY = {"gopher_quality": {}, "gopher_repetition": {}, "c4": {}}


def sample(copies: int) -> pd.DataFrame:
    docs = pd.read_json(SAMPLE, lines=True, dtype={"id": str})
    docs = docs.rename(columns={"lang": "label"}).assign(source="man", meta="{}")
    docs = pd.concat([docs] * copies, ignore_index=True)
    docs["id"] = [str(i) for i in range(len(docs))]
    docs["text"] = docs["text"].astype(object)
    langs, _ = detect_languages(docs["text"].tolist())
    return docs.assign(lang=langs)


def cpu_seconds(stage: HeuristicsStage, docs: pd.DataFrame, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        started = time.process_time()
        out = stage.process(docs, 0, None)
        best = min(best, time.process_time() - started)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = sample(args.copies)
    chars = docs["text"].str.len().sum()
    print(f"{len(docs):,} documents, {chars / 1e6:.1f} M characters, one partition")
    seconds, out = cpu_seconds(HeuristicsStage(EVERY_FAMILY, None), docs, args.repeat)
    print(f"C4 + Gopher quality + repetition: {seconds:.2f} CPU s "
          f"({len(docs) / seconds:,.0f} docs/CPU s), kept {len(out.kept):,}")
    quality = HeuristicsStage({"gopher_quality": {}}, None)
    rows = {}
    for name, frame in (("English list (no lang)", docs.drop(columns="lang")),
                        ("detected language", docs)):
        ledger = quality.process(frame, 0, None).ledger
        removed = ledger[ledger["reason"] == "gopher_quality.stop_words"]
        labels = docs.set_index("id").loc[removed["id"], "label"]
        rows[name] = labels.value_counts().reindex(sorted(docs["label"].unique()), fill_value=0)
    table = pd.DataFrame(rows) // args.copies
    print("\nremoved by gopher_quality.stop_words, per sample language (of 80 each):")
    print(table.to_string())


if __name__ == "__main__":
    main()
