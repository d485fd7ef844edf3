"""Documents/s of the normalize stage against plain per-document ftfy.fix_text loops.

Corpus: pydoc topics cut into documents of up to 6 paragraphs, plus standard-library
docstrings, with a planted share damaged the ways ftfy repairs (mojibake, curly-quote
mojibake, CRLF, NBSP, HTML entities). References, measured in the same run on the same
documents: (a) the plain `ftfy.fix_text` loop the issue names, and (b) the full
per-document definition (`fix_text` → NFC → whitespace rules). The stage's output must
equal (b) for every document; that is checked before any speed is reported.

    .venv/bin/python bench/normalize.py [--copies 4] [--damaged 0.1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import time
from pathlib import Path
from pydoc_data.topics import topics

import ftfy
import pandas as pd

from curation.stages.normalize import NormalizeConfig, NormalizeStage, normalize_text

MODULES = ["os", "re", "json", "collections", "itertools", "functools", "pathlib", "typing",
           "subprocess", "argparse", "logging", "email", "http.client", "unittest", "decimal"]


def python_docs() -> list[str]:
    texts = []
    for text in topics.values():
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        texts += ["\n\n".join(paragraphs[i : i + 6]) for i in range(0, len(paragraphs), 6)]
    for name in MODULES:
        module = importlib.import_module(name)
        for _, member in inspect.getmembers(module):
            doc = getattr(member, "__doc__", None)
            if isinstance(doc, str) and len(doc) > 80:
                texts.append(doc)
    return texts


DAMAGE = [
    lambda t: t.encode("utf-8").decode("latin-1").replace("e", "\u00c3\u00a9", 3),
    lambda t: t.replace("'", "\u00e2\u0080\u0099"),
    lambda t: t.replace("\n", "\r\n"),
    lambda t: t.replace(" ", "\u00a0", 20).replace("\n", "  \n"),
    lambda t: t.replace("&", "&amp;", 3) + " Tom &amp; Jerry",
]


def corpus(copies: int, damaged: float, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    texts = python_docs() * copies
    return [rng.choice(DAMAGE)(t) if rng.random() < damaged else t for t in texts]


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--damaged", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    texts = corpus(args.copies, args.damaged)
    docs = pd.DataFrame({"id": [str(i) for i in range(len(texts))], "source": "pydocs",
                         "text": texts, "meta": "{}"})
    stage = NormalizeStage(NormalizeConfig(), None)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    ascii_share = sum(t.isascii() for t in texts) / len(texts)
    print(f"{len(texts)} documents, {megabytes:.1f} MB, {ascii_share:.0%} plain ASCII, "
          f"{args.damaged:.0%} planted damage")

    t_stage, out = best_of(args.repeat, lambda: stage.process(docs, 0, Path(".")))
    t_ftfy, _ = best_of(args.repeat, lambda: [ftfy.fix_text(t) for t in texts])
    t_full, expected = best_of(args.repeat, lambda: [normalize_text(t) for t in texts])

    want = {str(i): t for i, t in enumerate(expected) if t}
    got = dict(zip(out.kept["id"], out.kept["text"], strict=True))
    if got != want:
        bad = [k for k in want if got.get(k) != want[k]]
        raise SystemExit(f"OUTPUT DIFFERS from the per-document path on {len(bad)} documents")
    print(f"identical output: yes ({len(got)} kept, {len(out.ledger)} ledger rows)")
    n = len(texts)
    print(f"{'path':44s} {'seconds':>8s} {'docs/s':>10s} {'stage speed-up':>15s}")
    for label, seconds in [
        ("normalize stage (ASCII fast path, Arrow)", t_stage),
        ("plain ftfy.fix_text loop", t_ftfy),
        ("per-document fix_text + NFC + whitespace", t_full),
    ]:
        print(f"{label:44s} {seconds:8.3f} {n / seconds:10.0f} {seconds / t_stage:14.1f}x")


if __name__ == "__main__":
    main()
