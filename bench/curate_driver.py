"""Peak RSS and CPU seconds of the `curate run` process (the driver) as the corpus grows.

The driver should do no work that grows with the corpus: every per-document step runs on
the workers, and the driver receives only counts, bounded samples and aggregates. This
benchmark runs `curate run corpus_specs/demo.yaml` on the demo corpus at two scales against
a Dask cluster started as separate processes (`dask scheduler` + `dask worker --no-nanny`),
so the driver's own figures are not mixed with the workers':

  - driver: `getrusage(RUSAGE_SELF)` of the `curate` process at exit (peak RSS, user+system
    CPU), and separately its child processes (fastText training runs in one);
  - workers: summed CPU seconds and the largest peak RSS (VmHWM) of the worker processes.

    .venv/bin/python bench/curate_driver.py [--scales 1 20] [--workers 2] [--code DIR]

`--code DIR` measures another checkout of the project (its `curation` package is put first
on PYTHONPATH of the driver and the workers), e.g. main's code unpacked with
`git archive main | tar -x -C /tmp/base`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

DRIVER = """
import json, resource, sys
from curation.cli import main
code = main(sys.argv[2:])
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    json.dump({"rc": code, "rss_mib": me.ru_maxrss / 1024, "cpu_s": me.ru_utime + me.ru_stime,
               "children_rss_mib": kids.ru_maxrss / 1024,
               "children_cpu_s": kids.ru_utime + kids.ru_stime}, f)
sys.exit(code)
"""


def _env(code: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _peak_rss_mib(proc: psutil.Process) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_cluster(workdir: Path, workers: int, env: dict) -> tuple[str, list]:
    scheduler_file = workdir / "scheduler.json"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--no-show",
                               "--scheduler-file", str(scheduler_file)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    for _ in range(600):
        if scheduler_file.exists() and scheduler_file.stat().st_size:
            break
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for k in range(workers):
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--memory-limit", "0", "--name", f"bench-{k}",
             "--local-directory", str(workdir / f"worker-{k}")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from dask.distributed import Client

    with Client(address, timeout=120) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, procs


def measure(scale: float, workers: int, code: Path, workdir: Path) -> dict:
    env = _env(code)
    data = workdir / "demo_data"
    # cwd: `python -c` / `-m` put the current folder first on sys.path, ahead of
    # PYTHONPATH; run from the work folder so that the driver imports `code`'s package.
    subprocess.run([str(BIN / "python"), "-m", "curation.cli", "demo-corpus", str(data),
                    "--scale", str(scale)], env=env, check=True, stdout=subprocess.DEVNULL,
                   cwd=workdir)
    (workdir / "specs").mkdir()
    spec = workdir / "specs" / "demo.yaml"
    shutil.copyfile(ROOT / "corpus_specs" / "demo.yaml", spec)  # its paths: ../demo_data/...
    address, procs = _start_cluster(workdir, workers, env)
    try:
        figures = workdir / "driver.json"
        started = time.perf_counter()
        log = workdir / "driver.log"
        with open(log, "w") as stderr:
            done = subprocess.run([str(BIN / "python"), "-c", DRIVER, str(figures), "run",
                                   str(spec), "--out", str(workdir / "out"), "--scheduler",
                                   address], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
                                  cwd=workdir)
        if done.returncode:
            raise RuntimeError(f"curate run failed:\n{log.read_text()[-4000:]}")
        wall = time.perf_counter() - started
        driver = json.loads(figures.read_text())
        worker_procs = [psutil.Process(p.pid) for p in procs[1:]]
        worker_cpu = sum(sum(p.cpu_times()[:2]) for p in worker_procs)
        worker_rss = max(_peak_rss_mib(p) for p in worker_procs)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    read = json.loads((workdir / "out" / "stages" / "00_read" / "_manifest.json").read_text())
    tokens = sum(json.loads(m.read_text())["tokens"]
                 for m in (workdir / "out" / "tokens").glob("*/manifest.json"))
    return {"scale": scale, "documents": read["totals"]["docs_in"], "tokens": tokens,
            "wall_s": wall, **driver, "workers_cpu_s": worker_cpu,
            "worker_peak_rss_mib": worker_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 20.0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--code", type=Path, default=ROOT, help="project checkout to measure")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory(prefix=f"curate-driver-{scale:g}-") as tmp:
            rows.append(measure(scale, args.workers, args.code.resolve(), Path(tmp)))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"code: {args.code.resolve()}, {args.workers} workers\n")
    print("| scale | documents | tokens | wall s | driver peak RSS MiB | driver CPU s | "
          "driver's children CPU s | workers CPU s | worker peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['scale']:g} | {r['documents']:,} | {r['tokens']:,} | {r['wall_s']:.1f} | "
              f"{r['rss_mib']:.0f} | {r['cpu_s']:.1f} | {r['children_cpu_s']:.1f} | "
              f"{r['workers_cpu_s']:.1f} | {r['worker_peak_rss_mib']:.0f} |")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"\nscale {last['scale']:g} / scale {first['scale']:g}: driver peak RSS "
              f"{last['rss_mib'] / first['rss_mib']:.2f}x, driver CPU "
              f"{last['cpu_s'] / first['cpu_s']:.2f}x, workers CPU "
              f"{last['workers_cpu_s'] / first['workers_cpu_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
