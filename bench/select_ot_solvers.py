"""Sinkhorn solvers for one GOT-D chunk, timed and held against POT float64.

One chunk as the 1M-candidate select bench solves it (bench/select_stage.py's synthetic
pool: 50,000 candidates against 2,000 target documents, hashed embeddings of 256 dims,
reg 0.1, 200 iterations), one thread per solver as on a Dask worker. Solvers:

- pot64: POT's ot.sinkhorn (scaling iterations) in float64: the stage's solver before
  curation/select/sinkhorn.py;
- pot32: the same with float32 inputs (POT's numpy backend keeps the dtype);
- pot_log64: POT's log-domain ot.sinkhorn(method="sinkhorn_log") in float64 (--log: slow);
- torch32 / torch64: curation/select/sinkhorn.py (stabilised, stops at float32's floor),
  float32 / float64.

For each: CPU and wall seconds of the solve (cost matrix included), and against pot64 the
overlap of the chosen 10% (the lowest calibrated gradients), Spearman's rank correlation of
the scores and their largest difference. Runs alternate over --repeats rounds.

    .venv/bin/python bench/select_ot_solvers.py [--docs 50000 --target 2000 --repeats 2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread per solver, as in a Dask worker with one thread

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from select_stage import documents  # noqa: E402

from curation.select.features import hashed_embeddings  # noqa: E402
from curation.select.got import calibrated_gradient, squared_distances  # noqa: E402
from curation.select.sinkhorn import solve  # noqa: E402


def pot(pool, target, reg, iters, dtype, method="sinkhorn"):
    import ot

    cost = squared_distances(pool, target).astype(dtype)
    a = np.full(len(pool), 1.0 / len(pool), dtype=dtype)
    b = np.full(len(target), 1.0 / len(target), dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = ot.sinkhorn(a, b, cost, reg, method=method, numItermax=iters, stopThr=1e-9,
                             log=True)
    if method == "sinkhorn_log":
        return np.asarray(log["log_u"], dtype=np.float64) * reg, log["niter"] + 1
    return reg * np.log(np.asarray(log["u"], dtype=np.float64)), log["niter"] + 1


SOLVERS = {
    "pot64": lambda p, t, reg, it: pot(p, t, reg, it, np.float64),
    "pot32": lambda p, t, reg, it: pot(p, t, reg, it, np.float32),
    "pot_log64": lambda p, t, reg, it: pot(p, t, reg, it, np.float64, "sinkhorn_log"),
    "torch32": lambda p, t, reg, it: solve(p, t, reg, it),
    "torch64": lambda p, t, reg, it: solve(p, t, reg, it, dtype=torch.float64),
}


def compare(scores: np.ndarray, reference: np.ndarray, budget: int) -> dict:
    from scipy.stats import spearmanr

    chosen = set(np.argsort(scores, kind="stable")[:budget])
    expected = set(np.argsort(reference, kind="stable")[:budget])
    return {"chosen_overlap": round(len(chosen & expected) / budget, 5),
            "spearman": round(float(spearmanr(scores, reference).statistic), 7),
            "max_abs_diff": float(np.abs(scores - reference).max()),
            "score_std": float(reference.std())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=50_000)
    ap.add_argument("--target", type=int, default=2000)
    ap.add_argument("--dims", type=int, default=256)
    ap.add_argument("--reg", type=float, default=0.1)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--solvers", default="pot64,torch32,pot32,pot_log64,torch64")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pool = hashed_embeddings(documents(args.docs, rng, lambda m: rng.integers(0, 2, size=m)),
                             args.dims)
    target = hashed_embeddings(documents(args.target, rng, lambda m: np.zeros(m, dtype=int)),
                               args.dims)
    names = args.solvers.split(",")
    scores, iterations, times = {}, {}, {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            cpu, wall = time.process_time(), time.perf_counter()
            potentials, iterations[name] = SOLVERS[name](pool, target, args.reg, args.iters)
            scores[name] = calibrated_gradient(potentials)
            times[name].append((round(time.process_time() - cpu, 1),
                                round(time.perf_counter() - wall, 1)))
    reference = scores[names[0]]
    for name in names:
        print(json.dumps({"solver": name, "docs": args.docs, "target": args.target,
                          "reg": args.reg, "iters": args.iters,
                          "iterations_run": iterations[name],
                          "cpu_s": [c for c, _ in times[name]],
                          "wall_s": [w for _, w in times[name]],
                          f"vs_{names[0]}": compare(scores[name], reference, args.docs // 10),
                          "load": round(os.getloadavg()[0], 1)}), flush=True)


if __name__ == "__main__":
    main()
