"""The whole curation job on 1 and on 2 workers, alternating, with per-stage seconds.

The job is bench/vs_datatrove.py's (normalize, Gopher + C4 heuristics, exact and fuzzy
dedup) on a corpus from bench/text_corpus.py. Each run is a fresh `curate run --force`;
the runs alternate in the order given, so both worker counts see similar machine load.
Prints per run the process wall and CPU seconds (every process of the run), the load
average around it, and per stage the manifest's seconds; then per stage the ratio of the
1-worker seconds to the 2-worker seconds (mean over the runs of each).

    .venv/bin/python bench/workers_scaling.py /tmp/c50k --work /tmp/scaling --order 2 1 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

from vs_datatrove import spec_text

ROOT = Path(__file__).resolve().parents[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(spec: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), children_cpu()
    subprocess.run([str(ROOT / ".venv" / "bin" / "curate"), "run", str(spec), "--out", str(out),
                    "--workers", str(workers), "--force"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {"workers": workers, "seconds": time.perf_counter() - wall,
              "cpu_seconds": children_cpu() - cpu, "load": (load_before, os.getloadavg()[0]),
              "stages": {}}
    for manifest in sorted((out / "stages").glob("*/_manifest.json")):
        m = json.loads(manifest.read_text())
        result["stages"][m["stage"]] = m["seconds"]
    result["outside_stages"] = result["seconds"] - sum(result["stages"].values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--order", type=int, nargs="+", default=[2, 1, 1, 2])
    parser.add_argument("--partition-rows", type=int, default=5000)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    spec = args.work / "spec.yaml"
    spec.write_text(spec_text(args.corpus.resolve(), args.partition_rows, only_fuzzy=False))
    runs = []
    for k, workers in enumerate(args.order):
        runs.append(run(spec, args.work / f"out-{k}", workers))
        r = runs[-1]
        print(f"run {k}: {workers} worker(s): wall {r['seconds']:.1f} s, "
              f"CPU {r['cpu_seconds']:.1f} s, load {r['load'][0]:.1f} -> {r['load'][1]:.1f}; "
              f"outside stages {r['outside_stages']:.1f} s; " + ", ".join(f"{s} {v:.1f}" for s, v in
                                                          r["stages"].items()), flush=True)
        (args.work / "results.json").write_text(json.dumps(runs, indent=1) + "\n")
    by = {w: [r for r in runs if r["workers"] == w] for w in (1, 2)}
    if by[1] and by[2]:
        def mean(w, key):
            return sum(key(r) for r in by[w]) / len(by[w])
        print("\n| part | 1 worker s | 2 workers s | 1w / 2w |\n|---|---:|---:|---:|")
        parts = [(s, lambda r, s=s: r["stages"].get(s, 0.0)) for s in by[2][0]["stages"]]
        parts += [("outside stages (start-up, finalise, report)", lambda r: r["outside_stages"]),
                  ("whole job (wall)", lambda r: r["seconds"]),
                  ("whole job (CPU, all processes)", lambda r: r["cpu_seconds"])]
        for name, key in parts:
            one, two = mean(1, key), mean(2, key)
            print(f"| {name} | {one:.1f} | {two:.1f} | {one / two if two else float('nan'):.2f} |")


if __name__ == "__main__":
    main()
