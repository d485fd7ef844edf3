"""MinHash signatures/s from raw text, and the whole fuzzy dedup stage on Dask.

Part 1 (one core, the same documents, 128 permutations, word 5-grams, from raw text):
  ours        shingle_hashes + MinHasher.signatures over a 1,000-document partition
  datasketch  per document: Python 5-gram strings -> MinHash.update_batch
  rensa       per document: Python 5-gram strings -> RMinHash.update (skipped if absent)
Part 2: the fuzzy stage (prepare + process) in documents/s at 1 and 2 workers, and the
peak RSS of each worker at two corpus sizes with the same partition size.

    .venv/bin/python bench/minhash.py [--docs 4000] [--stage-docs 4000 16000] [--part 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import tempfile
import time
import types
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pandas as pd

from curation.dedup.minhash import MinHasher, shingle_hashes

NUM_PERM, NGRAM, SEED = 128, 5, 1


def corpus(n_docs: int, seed: int = 0) -> list[str]:
    """Documents of 3-40 random sentences of Python's documentation (about 400 words);
    a tenth are near-copies of an earlier document (one word in 60 replaced, J ~ 0.85)."""
    rng = np.random.default_rng(seed)
    text = " ".join(topics[k] for k in sorted(topics))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    docs = []
    for _ in range(n_docs):
        if docs and rng.random() < 0.1:
            copy = docs[int(rng.integers(len(docs)))].split()
            for i in range(int(rng.integers(60)), len(copy), 60):
                copy[i] = f"w{rng.integers(1 << 30)}"
            docs.append(" ".join(copy))
            continue
        picks = rng.integers(0, len(sentences), size=int(rng.integers(3, 40)))
        docs.append(" ".join(sentences[i] for i in picks))
    return docs


def python_shingles(text: str) -> list[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) < NGRAM:
        return [" ".join(words)]
    return [" ".join(words[i:i + NGRAM]) for i in range(len(words) - NGRAM + 1)]


def rate(fn, n_docs: int, repeat: int = 3) -> float:
    best = min(_timed(fn) for _ in range(repeat))
    return n_docs / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(docs: list[str], part: int) -> None:
    hasher = MinHasher(NUM_PERM, SEED)
    for lo in range(0, len(docs), part):
        hasher.signatures(shingle_hashes(docs[lo:lo + part], NGRAM))


def datasketch_minhash(docs: list[str]) -> None:
    from datasketch import MinHash

    for text in docs:
        m = MinHash(num_perm=NUM_PERM, seed=SEED)
        m.update_batch([s.encode() for s in python_shingles(text)])


def rensa_minhash(docs: list[str]) -> None:
    from rensa import RMinHash

    for text in docs:
        m = RMinHash(NUM_PERM, SEED)
        m.update(python_shingles(text))
        m.digest()


def signature_bench(n_docs: int, part: int) -> None:
    docs = corpus(n_docs)
    words = np.mean([len(d.split()) for d in docs])
    print(f"signatures: {n_docs} docs, {words:.0f} words/doc, {NUM_PERM} perms, word {NGRAM}-grams,"
          f" one core")
    ours_rate = rate(lambda: ours(docs, part), len(docs))
    sub = docs[: max(200, n_docs // 8)]
    ds_rate = rate(lambda: datasketch_minhash(sub), len(sub), repeat=1)
    print(f"  ours        {ours_rate:10.0f} docs/s")
    print(f"  datasketch  {ds_rate:10.0f} docs/s   ours/datasketch = {ours_rate / ds_rate:.1f}x")
    try:
        import rensa  # noqa: F401
    except ImportError:
        print("  rensa       skipped: not installed (pip install rensa)")
        return
    rensa_rate = rate(lambda: rensa_minhash(docs), len(docs))
    print(f"  rensa       {rensa_rate:10.0f} docs/s   ours/rensa = {ours_rate / rensa_rate:.2f}x")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_bench(n_docs: int, part: int, workers: int) -> tuple[float, list[float]]:
    from dask.distributed import Client, LocalCluster

    from curation.stage_context import ClusterStageContext
    from curation.stages.fuzzy_dedup import FuzzyDedupConfig, FuzzyDedupStage

    docs = corpus(n_docs, seed=1)
    spec = types.SimpleNamespace(seed=SEED, sources=[types.SimpleNamespace(name="web",
                                                                           priority=0)])
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=40) as cluster, Client(cluster) as client:
        paths = []
        for k, lo in enumerate(range(0, n_docs, part)):
            chunk = docs[lo:lo + part]
            frame = pd.DataFrame({"id": [f"d{lo + i:08d}" for i in range(len(chunk))],
                                  "source": "web", "text": chunk, "meta": "{}"})
            paths.append(Path(tmp) / f"in-{k:05d}.parquet")
            frame.to_parquet(paths[-1], index=False)
        stage = FuzzyDedupStage(FuzzyDedupConfig(), spec)
        ctx = ClusterStageContext(spec, Path(tmp), Path(tmp) / "stage", paths, client)
        start = time.perf_counter()
        stage.prepare(ctx)
        futures = [client.submit(_process, stage, str(p), k, str(ctx.workdir))
                   for k, p in enumerate(paths)]
        removed = sum(client.gather(futures))
        elapsed = time.perf_counter() - start
        peaks = sorted(client.run(_peak_rss_mb).values())
    print(f"  stage: {n_docs:6d} docs, {workers} worker(s): {n_docs / elapsed:8.0f} docs/s "
          f"({elapsed:.1f} s, {removed} removed), peak RSS per worker "
          f"{', '.join(f'{p:.0f}' for p in peaks)} MiB")
    return n_docs / elapsed, peaks


def _process(stage, path: str, part: int, workdir: str) -> int:
    docs = pd.read_parquet(path)
    return len(stage.process(docs, part, Path(workdir)).ledger)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--part", type=int, default=1000, help="documents per partition")
    parser.add_argument("--stage-docs", type=int, nargs="*", default=[4000, 16000])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signature_bench(args.docs, args.part)
    if args.stage_docs:
        print(f"fuzzy stage (prepare + process), {args.part} docs per partition:")
        for workers in (1, 2):
            stage_bench(args.stage_docs[0], args.part, workers)
        for n_docs in args.stage_docs[1:]:
            stage_bench(n_docs, args.part, 2)


if __name__ == "__main__":
    main()
