"""The heuristics stage on real text in eight languages: CPU time, and what the Gopher
stop-word rule removes with and without the document's detected language.

Reads ../shared/data/langid-sample.jsonl (Debian manual pages in en, es, it, pl, nl, ru,
sv, cs), repeated `--copies` times, as one partition; `lang` comes from the language
stage's own detector.

Where Debian's packages are installed (`apt-get install fortunes-de manpages-de
manpages-fr`), German fortunes and German and French manual pages (section 1, rendered by
`man`) are judged as well, with every rule family on: per language, what each rule
removes with the English stop-word list and with the detected language's.

    .venv/bin/python bench/heuristics_languages.py [--copies 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.stages.heuristics import HeuristicsStage  # noqa: E402
from curation.stages.language import detect_languages  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "langid-sample.jsonl"
EVERY_FAMILY = {"gopher_quality": {}, "gopher_repetition": {}, "c4": {}}
FORTUNES_DE = Path("/usr/share/games/fortunes/de")
MAN_PAGES = {"de": Path("/usr/share/man/de/man1"), "fr": Path("/usr/share/man/fr/man1")}


def fortunes(folder: Path) -> list[str]:
    """Every fortune of the UTF-8 files (`*.u8`) in `folder`; fortunes end at a `%` line."""
    texts = []
    for path in sorted(folder.glob("*.u8")):
        text = path.read_text("utf-8", errors="replace")
        texts += [t.strip() for t in text.split("\n%\n") if t.strip()]
    return texts


def rendered_man_page(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0"}
    page = subprocess.run(["man", "-l", str(path)], capture_output=True, env=env).stdout
    plain = subprocess.run(["col", "-b"], input=page, capture_output=True).stdout
    return plain.decode("utf-8", errors="replace").strip()


def debian_texts() -> pd.DataFrame:
    """German fortunes, German and French manual pages, where installed (else empty)."""
    rows = [("de fortunes", t) for t in fortunes(FORTUNES_DE)] if FORTUNES_DE.is_dir() else []
    for lang, folder in MAN_PAGES.items():
        if folder.is_dir():
            with ThreadPoolExecutor(4) as pool:
                pages = pool.map(rendered_man_page, sorted(folder.glob("*.1*")))
                rows += [(f"{lang} man pages", page) for page in pages if page]
    docs = pd.DataFrame(rows, columns=["label", "text"]).assign(source="debian", meta="{}")
    docs["id"] = [f"debian-{i}" for i in range(len(docs))]
    langs, _ = detect_languages(docs["text"].tolist()) if len(docs) else ([], None)
    return docs.assign(lang=langs)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| language | " + " | ".join(map(str, frame.columns)) + " |",
             "|---|" + "---:|" * (len(frame.columns) - 1) + "---|"]
    lines += ["| " + " | ".join(map(str, [label, *row])) + " |"
              for label, row in zip(frame.index, frame.to_numpy().tolist(), strict=True)]
    return "\n".join(lines)


def reasons_by_language(docs: pd.DataFrame, stage: HeuristicsStage) -> pd.DataFrame:
    """Per sample label: documents, removed (English list vs detected language), and what
    the stop-word rule and each other rule removed with the detected language."""
    rows = {}
    english = stage.process(docs.drop(columns="lang"), 0, None).ledger
    detected = stage.process(docs, 0, None).ledger
    for label, group in docs.groupby("label", sort=True):
        ids = set(group["id"])
        eng = english[english["id"].isin(ids) & (english["action"] == "removed")]
        det = detected[detected["id"].isin(ids) & (detected["action"] == "removed")]
        others = det[det["reason"] != "gopher_quality.stop_words"]["reason"].value_counts()
        rows[label] = {
            "documents": len(group),
            "removed (English list)": len(eng),
            "of which stop_words": int((eng["reason"] == "gopher_quality.stop_words").sum()),
            "removed (detected language)": len(det),
            "of which stop_words ": int((det["reason"] == "gopher_quality.stop_words").sum()),
            "other rules, largest first": ", ".join(f"{r.split('.', 1)[-1]} {n}"
                                                    for r, n in others.head(4).items()),
        }
    return pd.DataFrame(rows).T


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
    every = HeuristicsStage(EVERY_FAMILY, None)
    once = docs[docs["id"].astype(int) < len(docs) // args.copies]
    print("\nevery family on (C4 + Gopher quality + repetition), documents removed:")
    print(markdown(reasons_by_language(once, every)))
    debian = debian_texts()
    if len(debian):
        print(f"\nDebian's German/French texts ({len(debian):,} documents; detected "
              f"languages: {debian['lang'].value_counts().head(5).to_dict()}):")
        print(markdown(reasons_by_language(debian, every)))
        print("\nGopher quality alone (no C4 rule judges first), documents removed:")
        print(markdown(reasons_by_language(debian, quality)))
    else:
        print("\n(fortunes-de, manpages-de and manpages-fr are not installed: no German or "
              "French texts)")


if __name__ == "__main__":
    main()
