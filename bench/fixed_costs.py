"""Where a small `curate run` spends the time that does not depend on the corpus.

Runs `curate run corpus_specs/demo.yaml` in this process on a small demo corpus (a fresh
LocalCluster, as a user's first run), with a timer around each fixed step: the imports
(`curate run`'s own, timed in a fresh interpreter), loading and hashing the spec, starting
and closing the cluster, fingerprinting the inputs, the report (its counts and its plots
apart), and the end-of-run table. It then runs the same command again, when every stage
is skipped: that rerun is all fixed cost.

    .venv/bin/python bench/fixed_costs.py [--scale 0.2] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMPORTS = ("import time; t = time.perf_counter(); import curation.cli, curation.cluster, "
           "curation.pipeline, curation.report, curation.run_lock, curation.spec; "
           "print(time.perf_counter() - t)")

SECONDS: dict[str, float] = defaultdict(float)


def _timed(owner, name: str, label: str) -> None:
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - started

    setattr(owner, name, timed)


def _timed_context(owner, name: str, start_label: str, close_label: str) -> None:
    inner = getattr(owner, name)

    @contextmanager
    def timed(*args, **kwargs):
        started = time.perf_counter()
        with inner(*args, **kwargs) as value:
            SECONDS[start_label] += time.perf_counter() - started
            try:
                yield value
            finally:
                closing = time.perf_counter()
        SECONDS[close_label] += time.perf_counter() - closing

    setattr(owner, name, timed)


def instrument() -> None:
    import curation.cluster
    import curation.pipeline
    import curation.report
    import curation.report.build
    import curation.report.data
    import curation.report.plots
    import curation.spec

    _timed(curation.spec, "load_spec", "load + validate spec")
    _timed(curation.pipeline, "freeze_spec", "hash + freeze spec")
    _timed(curation.pipeline, "content_fingerprint", "fingerprint inputs")
    _timed_context(curation.cluster, "dask_client", "start cluster", "close cluster")
    _timed(curation.pipeline, "run_pipeline", "stages + tokenize (not fixed)")
    _timed(curation.report, "write_report", "report (all)")
    _timed(curation.report.data, "gather_counts", "report: counts on the workers")
    _timed(curation.report.plots, "_save", "report: plots")
    _timed(curation.report, "summary_text", "end-of-run table")


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have exited (the cluster's
    workers and nannies, once closed): what the load of a shared machine inflates least."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    python = str(Path(sys.executable))
    imports = [float(subprocess.run([python, "-c", IMPORTS], cwd=ROOT, check=True,
                                    capture_output=True, text=True).stdout) for _ in range(3)]
    instrument()
    from curation.cli import main as curate

    with tempfile.TemporaryDirectory(prefix="fixed-costs-") as tmp:
        work = Path(tmp)
        subprocess.run([python, "-m", "curation.cli", "demo-corpus", str(work / "demo_data"),
                        "--scale", str(args.scale)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        (work / "specs").mkdir()
        spec = work / "specs" / "demo.yaml"
        shutil.copyfile(ROOT / "corpus_specs" / "demo.yaml", spec)
        runs = {}
        for run in ("first run", "rerun (all skipped)"):
            SECONDS.clear()
            started, cpu = time.perf_counter(), _cpu_seconds()
            code = curate(["run", str(spec), "--out", str(work / "out"),
                           "--workers", str(args.workers)])
            assert code == 0, f"curate run failed ({code})"
            runs[run] = {**SECONDS, "whole command": time.perf_counter() - started,
                         "whole command, CPU s (all processes)": _cpu_seconds() - cpu}
    labels = list(dict.fromkeys(k for r in runs.values() for k in r))
    print(f"\ndemo corpus at scale {args.scale:g}, {args.workers} workers; imports of "
          f"`curate run` in a fresh interpreter: {min(imports):.2f} s (best of 3)\n")
    print("| step | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for label in labels:
        print(f"| {label} | " + " | ".join(f"{r.get(label, 0.0):.2f}" for r in runs.values())
              + " |")
    rerun = runs["rerun (all skipped)"]
    fixed = rerun["whole command"] - rerun.get("stages + tokenize (not fixed)", 0.0)
    print(f"\nfixed cost of a run (rerun, less its skipped stages) + imports: "
          f"{fixed + min(imports):.2f} s; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
