"""Time of the `select` stage on N candidate documents on a 2-worker Dask cluster.

(Not bench/select.py: that name would shadow the standard library's `select` module.)

Synthetic pool: documents of 60-120 words drawn from two Zipf word distributions over a
20k-word vocabulary (two "domains"), in parquet partitions of 20k documents; the target
is 2000 documents of one domain. Measured: `prepare` (features, OT chunks or DSIR
weights, the distributed cut) and the per-partition `run` that writes kept documents and
ledger rows, as the pipeline runs them; wall seconds, and CPU seconds of the driver and of
each worker process (this machine is shared, so wall time alone says little). The wall
time of each step (features, OT chunks, gather, cut passes) is in the progress lines on
stderr.

    .venv/bin/python bench/select_stage.py --docs 1000000 --method got [--dims 256 --chunk 50000]
    .venv/bin/python bench/select_stage.py --features-only   # features of one partition
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from curation.atomic import atomic_write_parquet
from curation.pipeline import process_partition_task
from curation.stage_context import ClusterStageContext
from curation.stages.select import SelectStage

VOCAB = 20_000
PART = 20_000


def documents(n: int, rng: np.random.Generator, domain_of) -> list[str]:
    words = np.array([f"w{i}" for i in range(VOCAB)])
    lengths = rng.integers(60, 121, size=n)
    ranks = rng.zipf(1.2, size=int(lengths.sum())) % VOCAB
    domains = np.repeat(domain_of(n), lengths)
    ids = (ranks * (1 + 7 * domains)) % VOCAB  # domain 1 permutes the vocabulary
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    flat = words[ids]
    return [" ".join(flat[bounds[i]:bounds[i + 1]]) for i in range(n)]


def _cpu_seconds() -> float:
    """User + system CPU seconds of this (worker) process so far."""
    import psutil

    times = psutil.Process().cpu_times()
    return times.user + times.system


def features_cpu(dims: int) -> None:
    """Best of 3: CPU seconds of hashed embeddings + token counts of one bench partition."""
    from curation.select.features import hashed_embeddings, token_counts

    rng = np.random.default_rng(0)
    texts = documents(PART, rng, lambda m: rng.integers(0, 2, size=m))
    hashed_embeddings(texts[:10], dims)
    best = np.inf
    for _ in range(3):
        started = time.process_time()
        hashed_embeddings(texts, dims)
        token_counts(texts)
        best = min(best, time.process_time() - started)
    print(json.dumps({"docs": PART, "dims": dims, "features_cpu_s": round(best, 3)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--method", default="got")
    ap.add_argument("--dims", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=50_000)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--features-only", action="store_true",
                    help="CPU seconds of the features of one partition, in this process")
    args = ap.parse_args()
    if args.features_only:
        return features_cpu(args.dims)
    root = Path(tempfile.mkdtemp(prefix="bench-select-"))
    try:
        run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~2 GB at 1M documents


def run(args: argparse.Namespace, root: Path) -> None:
    rng = np.random.default_rng(0)
    parts = []
    for k, lo in enumerate(range(0, args.docs, PART)):
        n = min(PART, args.docs - lo)
        texts = documents(n, rng, lambda m: rng.integers(0, 2, size=m))
        docs = pd.DataFrame({"id": [f"d{lo + i}" for i in range(n)], "source": "pool",
                             "text": texts, "meta": "{}"})
        atomic_write_parquet(docs, root / "in" / f"part-{k:05d}.parquet")
        parts.append(root / "in" / f"part-{k:05d}.parquet")
    with open(root / "target.jsonl", "w") as f:
        for text in documents(2000, rng, lambda m: np.zeros(m, dtype=int)):
            f.write(json.dumps({"text": text}) + "\n")
    spec = SimpleNamespace(seed=1, base_dir=root, sources=[SimpleNamespace(name="pool")])
    stage = SelectStage({"method": args.method, "target": {"paths": ["target.jsonl"]},
                         "budget": {"docs": args.docs // 10},
                         "embedding": {"dims": args.dims},
                         "ot": {"chunk": args.chunk, "iters": args.iters}}, spec)
    folder = root / "stage"
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        clock = PhaseClock(client)
        stage.prepare(TimedContext(clock, spec, root, folder, parts, client))
        clock.mark("cut and summary passes")
        prepared = time.perf_counter()
        futures = [client.submit(process_partition_task, stage, str(p), k, str(folder))
                   for k, p in enumerate(parts)]
        client.gather(futures)
        clock.mark("run: write kept documents and ledger")
    total = clock.marks[-1][1] - clock.marks[0][1]
    driver_cpu = clock.marks[-1][2] - clock.marks[0][2]
    workers_cpu = [b - a for a, b in zip(clock.marks[0][3], clock.marks[-1][3], strict=True)]
    print(json.dumps({"docs": args.docs, "method": args.method, "dims": args.dims,
                      "chunk": args.chunk, "iters": args.iters,
                      "prepare_s": round(prepared - clock.marks[0][1], 1),
                      "run_s": round(clock.marks[-1][1] - prepared, 1),
                      "total_s": round(total, 1),
                      "cpu_s": round(driver_cpu + sum(workers_cpu), 1),
                      "driver_cpu_s": round(driver_cpu, 1),
                      "worker_cpu_s": [round(c, 1) for c in workers_cpu],
                      "phases": clock.phases(),
                      "load_1min_end": round(os.getloadavg()[0], 1),
                      "docs_per_s": round(args.docs / total)}))


class PhaseClock:
    """Wall, driver CPU and per-worker CPU seconds at marks; phases are their differences."""

    def __init__(self, client):
        self.client = client
        self.marks: list[tuple[str, float, float, list[float]]] = []
        self.mark("start")

    def mark(self, label: str) -> None:
        workers = self.client.run(_cpu_seconds)
        self.marks.append((label, time.perf_counter(), time.process_time(),
                           [workers[w] for w in sorted(workers)]))

    def phases(self) -> list[dict]:
        return [{"phase": label, "wall_s": round(wall - wall0, 1),
                 "driver_cpu_s": round(cpu - cpu0, 1),
                 "worker_cpu_s": [round(b - a, 1) for a, b in zip(w0, w, strict=True)]}
                for (_, wall0, cpu0, w0), (label, wall, cpu, w)
                in zip(self.marks, self.marks[1:], strict=False) if wall - wall0 >= 0.05]


class TimedContext(ClusterStageContext):
    """The stage's context, marking the clock around each pass over the partitions; what
    runs between two passes (GOT-D's target embedding and OT chunks) is its own phase."""

    def __init__(self, clock: PhaseClock, *args):
        super().__init__(*args)
        self.clock = clock

    def map(self, fn, *args, desc: str = "", **kwargs):
        self.clock.mark(f"before {desc}")
        result = super().map(fn, *args, desc=desc, **kwargs)
        self.clock.mark(desc)
        return result

if __name__ == "__main__":
    main()
