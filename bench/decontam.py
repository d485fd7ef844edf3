"""Decontamination and quality-scoring throughput.

Decontamination: our stage (vectorised hashing + sorted-array probes, both passes)
against a plain reference (a Python set of word tuples, Megatron's scan-and-rescan
loop), in the same run, on the same corpus and 10,000-item task set; the outputs are
compared. Scoring: one batched fastText predict per partition against one call per doc.

    .venv/bin/python bench/decontam.py [--docs 4000] [--ref-docs 400]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from pydoc_data.topics import topics
from types import SimpleNamespace

import pandas as pd

from curation.decontam.ngrams import build_task_table
from curation.quality.model import load_model, positive_probability, preprocess, train_quality_model
from curation.stages.decontaminate import DecontaminateConfig, DecontaminateStage


def sentences() -> list[str]:
    text = " ".join(topics[k] for k in sorted(topics))
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6]


def make_corpus(rng, n_docs, n_tasks):
    pool = sentences()
    vocab = sorted({w.lower() for s in pool for w in re.findall(r"\w+", s)})
    tasks = [" ".join(rng.choices(vocab, k=rng.randint(20, 60))) for _ in range(n_tasks)]
    docs = []
    for i in range(n_docs):
        body = rng.choices(pool, k=rng.randint(8, 30))
        if i % 20 == 0:  # 5% contaminated with a task 13-gram
            words = rng.choice(tasks).split()
            start = rng.randint(0, len(words) - 13)
            body.insert(rng.randint(0, len(body)), " ".join(words[start : start + 13]) + ".")
        docs.append(" ".join(body))
    return docs, tasks


class InProcessContext:
    """ctx.map without a cluster: the bench measures the stage's own work."""

    def __init__(self, parts, workdir):
        self.parts, self.workdir, self.out, self.partitions = parts, workdir, workdir, []

    def map(self, fn, *args, columns=None, desc=""):
        return [fn(p[columns] if columns else p, i, *args) for i, p in enumerate(self.parts)]


def run_stage(docs, tasks, tmp: Path):
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tasks.jsonl").write_text("".join(json.dumps({"q": t}) + "\n" for t in tasks))
    spec = SimpleNamespace(seed=1, base_dir=tmp)
    config = DecontaminateConfig(tasks=[{"name": "t", "paths": ["tasks.jsonl"], "fields": ["q"]}])
    stage = DecontaminateStage(config, spec)
    frame = pd.DataFrame({"id": [str(i) for i in range(len(docs))], "source": "web",
                          "text": docs, "meta": "{}"})
    parts = [frame.iloc[i::4].reset_index(drop=True) for i in range(4)]
    start = time.perf_counter()
    stage.prepare(InProcessContext(parts, tmp / "work"))
    outs = [stage.process(p, i, tmp / "work") for i, p in enumerate(parts)]
    elapsed = time.perf_counter() - start
    kept = pd.concat([o.kept for o in outs])
    ledger = pd.concat([o.ledger for o in outs])
    result = dict(zip(kept["id"], kept["text"], strict=True))
    result.update({i: None for i in ledger.loc[ledger["action"] == "removed", "id"]})
    return elapsed, result


def reference(docs, tasks, max_matches=10):
    """Plain Python: tuples of words in a set, Megatron's scan and rescan per document."""
    def words(text):
        return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"\w+", text)]

    keys = set()
    for t in tasks:
        w = [x for x, _, _ in words(t)]
        keys.update(tuple(w[i : i + 13]) for i in range(len(w) - 12))
    counts = {}
    for d in docs:
        w = [x for x, _, _ in words(d)]
        for i in range(len(w) - 12):
            g = tuple(w[i : i + 13])
            if g in keys:
                counts[g] = counts.get(g, 0) + 1
    active = {g for g, c in counts.items() if c < max_matches}

    def first(text):
        w = words(text)
        for i in range(len(w) - 12):
            if tuple(x for x, _, _ in w[i : i + 13]) in active:
                return w[i][1], w[i + 12][2]
        return None

    out = {}
    for doc_id, text in enumerate(docs):
        pieces, queue = [], [text]
        while queue:
            cur = queue.pop(0)
            found = first(cur)
            if found is None:
                pieces.append(cur)
                continue
            pos = found[0] - 200
            while pos > 0 and cur[pos] not in ".!?":
                pos -= 1
            if pos > 0 and pos + 1 > 200:
                pieces.append(cur[: pos + 1])
            pos = found[1] + 200
            while pos < len(cur) and cur[pos] not in ".!?":
                pos += 1
            if len(cur) - (pos + 1) > 200:
                queue.append(cur[pos + 1 :])
        out[str(doc_id)] = None if not pieces or len(pieces) > 10 else "\n\n".join(pieces)
    return out


def bench_scoring(rng, docs, tmp: Path):
    junk = [" ".join(rng.choices("buy cheap casino free win click now deal".split(), k=60))
            for _ in range(300)]
    train_quality_model(sentences()[:300], junk, tmp / "q", seed=1, dim=32, bucket=200_000)
    model = load_model(tmp / "q" / "model.bin")
    start = time.perf_counter()
    positive_probability(model, preprocess(docs))
    batched = time.perf_counter() - start
    start = time.perf_counter()
    for text in preprocess(docs):
        model.predict(text, k=2)
    per_doc = time.perf_counter() - start
    return batched, per_doc


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--ref-docs", type=int, default=400)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args(argv)
    rng = random.Random(0)
    docs, tasks = make_corpus(rng, args.docs, args.tasks)
    mb = sum(len(d) for d in docs) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        table = build_task_table([("t", tasks)])
        build = time.perf_counter() - start
        ours, result = run_stage(docs, tasks, tmp)
        sub = docs[: args.ref_docs]
        ref_time_start = time.perf_counter()
        ref = reference(sub, tasks)
        ref_time = time.perf_counter() - ref_time_start
        _, ours_sub = run_stage(sub, tasks, tmp / "sub")
        same = ours_sub == ref
        changed = sum(1 for k, v in result.items() if v is None or v != docs[int(k)])
        batched, per_doc = bench_scoring(rng, docs, tmp)
    ours_rate, ref_rate = len(docs) / ours, len(sub) / ref_time
    print(f"corpus: {len(docs)} docs, {mb:.1f} MB; task set: {len(tasks)} items, "
          f"{len(table)} 13-gram keys (built in {build:.2f} s)")
    print(f"decontaminate (ours, both passes): {ours_rate:,.0f} docs/s "
          f"({mb / ours:.2f} MB/s); {changed} docs cut or dropped")
    print(f"decontaminate (plain reference, {len(sub)} docs): {ref_rate:,.0f} docs/s")
    print(f"speed-up: {ours_rate / ref_rate:.1f}x; outputs identical on the reference subset: "
          f"{same}")
    print(f"quality scoring: batched {len(docs) / batched:,.0f} docs/s, one predict per doc "
          f"{len(docs) / per_doc:,.0f} docs/s ({per_doc / batched:.2f}x)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
