"""A benchmark corpus of real text from this machine, as JSONL shards both systems read.

Sources: the demo corpus at a scale (Python's reference topics, stdlib docstrings and the
synthetic crawl with its planted copies), man pages rendered to plain text by a small troff
stripper, and the Debian copyright files under /usr/share/doc. Documents are shuffled with
a fixed seed and numbered in shard order (`d0000000`, ...), so "the smallest id" and "the
first document read" name the same copy on both sides of a comparison.

    .venv/bin/python bench/text_corpus.py OUT_DIR --docs 50000 [--shards 8]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

SEED = 22
DOCS_PER_DEMO_SCALE = 1650  # the demo corpus grows by about this many documents per scale
_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\((em|en)"), "-"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other special characters
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group(0) == "\\-" else "\\"),
    (re.compile(r"\\[&|^%c,/]"), ""),
    (re.compile(r"\\ "), " "),
]


def man_text(source: str) -> str:
    """Plain text of a troff man page: comments and layout requests dropped, macro
    arguments kept as text, escapes removed."""
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}', "'")):
            continue
        if line.startswith("."):
            parts = line[1:].split(None, 1)
            line = parts[1].replace('"', "") if len(parts) == 2 else ""
            if not line:
                continue
        for pattern, replacement in _ESCAPES:
            line = pattern.sub(replacement, line)
        lines.append(line)
    return "\n".join(lines).strip()


def man_pages() -> list[str]:
    texts = []
    for path in sorted(Path("/usr/share/man").rglob("*.gz")):
        try:
            text = man_text(gzip.decompress(path.read_bytes()).decode("utf-8", "replace"))
        except (OSError, EOFError):
            continue
        if text:
            texts.append(text)
    return texts


def copyright_files() -> list[str]:
    texts = []
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        text = path.read_text("utf-8", "replace").strip()
        if text:
            texts.append(text)
    return texts


def demo_texts(scale: float, work: Path) -> list[str]:
    """Every document of the demo corpus at `scale` (malformed records left out)."""
    import pyarrow.parquet as pq
    import zstandard

    from curation.demo_corpus import build_demo_corpus

    build_demo_corpus(work, scale=scale)
    texts = []
    for path in sorted(work.rglob("part-*")):
        if path.suffix == ".parquet":
            texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
            continue
        raw = path.read_bytes()
        raw = gzip.decompress(raw) if path.name.endswith(".gz") else \
            zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        for line in raw.decode("utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("text"), str):
                texts.append(record["text"])
    return texts


def build(out: Path, docs: int, shards: int) -> dict:
    """Write `shards` JSONL files {"id", "text", "origin"} holding about `docs` documents."""
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "corpus.json"
    wanted = {"docs": docs, "shards": shards, "seed": SEED}
    if summary_path.exists() and json.loads(summary_path.read_text()).get("request") == wanted:
        return json.loads(summary_path.read_text())
    texts = [("man", t) for t in man_pages()] + [("copyright", t) for t in copyright_files()]
    scale = max(0.1, (docs - len(texts)) / DOCS_PER_DEMO_SCALE)
    texts += [("demo", t) for t in demo_texts(scale, out / "_demo")]
    random.Random(SEED).shuffle(texts)
    bounds = [round(i * len(texts) / shards) for i in range(shards + 1)]
    by_origin: dict[str, int] = {}
    for k in range(shards):
        with open(out / f"shard-{k:03d}.jsonl", "w", encoding="utf-8") as f:
            for i in range(bounds[k], bounds[k + 1]):
                origin, text = texts[i]
                by_origin[origin] = by_origin.get(origin, 0) + 1
                f.write(json.dumps({"id": f"d{i:07d}", "text": text, "origin": origin},
                                   ensure_ascii=False) + "\n")
    summary = {"request": wanted, "documents": len(texts), "by_origin": by_origin,
               "text_bytes": sum(len(t.encode("utf-8")) for _, t in texts), "demo_scale": scale}
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.docs, args.shards), indent=1))


if __name__ == "__main__":
    main()
