"""Documents/s of the heuristics stage on Python's own docs, against a plain Python loop.

The reference applies the same Gopher quality and repetition rules one document at a
time with str methods, collections.Counter and tuples of words (the obvious
implementation); both must reach the same decision for every document, which this
script checks before it reports any speed.

    .venv/bin/python bench/heuristics.py [--copies 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from pydoc_data.topics import topics

import pandas as pd

from curation.stages.heuristics import (
    GopherQualityConfig,
    GopherRepetitionConfig,
    HeuristicsConfig,
    HeuristicsStage,
)


def python_docs(copies: int) -> pd.DataFrame:
    """pydoc topics cut into documents of up to 6 paragraphs, the set repeated `copies` times."""
    texts = []
    for text in topics.values():
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        texts += ["\n\n".join(paragraphs[i : i + 6]) for i in range(0, len(paragraphs), 6)]
    texts = texts * copies
    return pd.DataFrame(
        {"id": [str(i) for i in range(len(texts))], "source": "pydocs", "text": texts, "meta": "{}"}
    )


def reference_quality(text: str, c: GopherQualityConfig) -> str | None:
    words = text.split()
    n = len(words)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    mean = sum(map(len, words)) / n if n else 0.0
    symbols = max(text.count("#"), text.count("...") + text.count("…")) / n if n else 0.0
    bullets = sum(line[0] in "-*•‣⁃◦●○▪▫■□·" for line in lines) / len(lines) if lines else 0.0
    ellipsis = sum(line.endswith(("...", "…")) for line in lines) / len(lines) if lines else 0.0
    alpha = sum(any(ch.isalpha() for ch in w) for w in words) / n if n else 0.0
    edges = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…"
    stops = len({w.lower().strip(edges) for w in words} & set(c.stop_words))
    checks = [
        ("word_count", n < c.min_words or n > c.max_words),
        ("mean_word_length", mean < c.min_mean_word_length or mean > c.max_mean_word_length),
        ("symbol_word_ratio", symbols > c.max_symbol_word_ratio),
        ("bullet_lines", bullets > c.max_bullet_line_fraction),
        ("ellipsis_lines", ellipsis > c.max_ellipsis_line_fraction),
        ("alpha_words", alpha < c.min_alpha_word_fraction),
        ("stop_words", stops < c.min_stop_words),
    ]
    return next((f"gopher_quality.{name}" for name, failed in checks if failed), None)


def _dup_fractions(pieces: list[str]) -> tuple[float, float]:
    seen, dups, dup_chars = set(), 0, 0
    for piece in pieces:
        if piece in seen:
            dups, dup_chars = dups + 1, dup_chars + len(piece)
        seen.add(piece)
    total = sum(map(len, pieces))
    return (dups / len(pieces) if pieces else 0.0, dup_chars / total if total else 0.0)


def reference_repetition(text: str, c: GopherRepetitionConfig) -> str | None:
    lines = [p.strip() for p in text.split("\n") if p.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n[ \t\r\f\v]*\n", text) if p.strip()]
    line_frac, line_chars = _dup_fractions(lines)
    para_frac, para_chars = _dup_fractions(paragraphs)
    checks = [
        ("dup_line_fraction", line_frac, c.max_dup_line_fraction),
        ("dup_paragraph_fraction", para_frac, c.max_dup_paragraph_fraction),
        ("dup_line_char_fraction", line_chars, c.max_dup_line_char_fraction),
        ("dup_paragraph_char_fraction", para_chars, c.max_dup_paragraph_char_fraction),
    ]
    words = text.split()
    total = sum(map(len, words))
    for n in range(2, 11):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        counts = Counter(grams)
        covered = [False] * len(words)
        if n <= 4:
            # max() keeps the first of equals; a Counter is in order of first occurrence.
            leader, top_count = max(counts.items(), key=lambda kv: kv[1], default=(None, 0))
            for i, g in enumerate(grams):
                if top_count > 1 and g == leader:
                    covered[i : i + n] = [True] * n
            name, limit = f"top_{n}gram_char_fraction", c.top_ngram_threshold(n)
        else:
            for i, g in enumerate(grams):
                if counts[g] > 1:
                    covered[i : i + n] = [True] * n
            name, limit = f"dup_{n}gram_char_fraction", c.dup_ngram_threshold(n)
        share = sum(len(w) for w, cov in zip(words, covered, strict=True) if cov) / total
        checks.append((name, share if total else 0.0, limit))
    return next((f"gopher_repetition.{name}" for name, v, lim in checks if v > lim), None)


def reference(docs: pd.DataFrame) -> list[str | None]:
    quality, repetition = GopherQualityConfig(), GopherRepetitionConfig()
    return [reference_quality(t, quality) or reference_repetition(t, repetition) for t in docs.text]


def timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    docs = python_docs(args.copies)
    n, mb = len(docs), docs.text.str.len().sum() / 1e6
    print(f"{n} documents, {mb:.1f} M characters (pydoc topics x{args.copies})")

    gopher = HeuristicsStage(HeuristicsConfig(gopher_quality={}, gopher_repetition={}), None)
    every = HeuristicsStage(HeuristicsConfig(gopher_quality={}, gopher_repetition={}, c4={}), None)
    # The reference is slow: time it on one copy of the corpus.
    one_copy = docs.iloc[: n // args.copies]
    ref_s, ref_reasons = timed(lambda: reference(one_copy), 1)
    gopher_s, gopher_out = timed(lambda: gopher.process(docs, 0, None), args.repeat)
    every_s, every_out = timed(lambda: every.process(docs, 0, None), args.repeat)

    removed = gopher_out.ledger.set_index("id")["reason"]
    stage_reasons = [removed.get(i) for i in one_copy.id]
    disagree = sum(a != b for a, b in zip(stage_reasons, ref_reasons, strict=True))
    print(f"decisions that differ from the reference: {disagree} of {len(one_copy)}")
    assert disagree == 0, "the stage and the reference disagree"

    ref_rate = len(one_copy) / ref_s
    rows = [
        ("plain Python loop, Gopher quality + repetition", ref_rate),
        ("stage, Gopher quality + repetition", n / gopher_s),
        ("stage, C4 + Gopher quality + repetition", n / every_s),
    ]
    print(f"{'':50s} {'docs/s':>10s} {'MB/s':>7s} {'vs loop':>8s}")
    for name, rate in rows:
        print(f"{name:50s} {rate:10.0f} {rate * mb / n:7.2f} {rate / ref_rate:7.1f}x")
    kept = len(every_out.kept) / n
    print(f"kept with every family on: {kept:.1%}; Gopher only: {len(gopher_out.kept) / n:.1%}")


if __name__ == "__main__":
    main()
