"""Fault recovery of `curate run` (a killed Dask worker, a killed run that is rerun) and of
`pretrain` under torchrun (a killed rank).

Scenario 1 (`worker`): a `dask scheduler` and two `dask worker --no-nanny` processes on
loopback; one worker is SIGKILLed while a stage is half done (some partition stats
written, no manifest yet). The run must finish on the surviving worker.
Scenario 2 (`run`): `curate run` (its whole process group: driver and LocalCluster
workers) is SIGKILLed mid-stage, then run again on the same OUT.

Each is compared with an undisturbed run of the same spec: curated documents and ledger
as sorted tables, token shards and the tokenizer by sha256.
Scenario 3 (`rank`): `torchrun --standalone --nproc-per-node 2 --max-restarts 1` trains the
tiny config at DP 2; rank 1's worker is SIGKILLed mid-run; torchrun restarts the group, which
resumes from the latest checkpoint. Compared with an undisturbed torchrun job: the final
logged loss of every step (tests/test_faults_training.py checks the same).

The scenarios live in bench/curation_faults.py and bench/training_faults.py, which the
fault tests (tests/test_faults_*.py) run too; this script times them and prints the table.
From the project root:

    .venv/bin/python -m bench.faults [--scale 0.1] [--partition-rows 8] [--workdir DIR]
                                     [--scenarios 1,2,3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.curation_faults import (
    KILL_POINTS,
    RunOutput,
    differences,
    loopback_cluster,
    rerun_scenario,
    run_curate,
    snapshot,
    worker_scenario,
    write_fault_corpus,
)
from bench.training_faults import (
    TRAIN_KILL_AFTER,
    TRAIN_SAVE_EVERY,
    final_losses,
    rank_scenario,
)


def _same(reference: RunOutput, out: Path) -> str:
    problems = differences(reference, snapshot(out))
    return "yes" if not problems else "**NO**: " + "; ".join(problems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1)
    parser.add_argument("--partition-rows", type=int, default=8)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--scenarios", default="1,2,3", help="comma-separated subset of 1,2,3")
    args = parser.parse_args()
    scenarios = set(args.scenarios.split(","))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    rows = training_rows(workdir) if "3" in scenarios else []
    if scenarios & {"1", "2"}:
        rows = curation_rows(workdir, args, scenarios) + rows
    print("\n| scenario | killed at (s) | recovery (s) | total (s) | total vs undisturbed "
          "| identical |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, killed, recovery, total, ratio, same in rows:
        print(f"| {name} | {killed} | {recovery:.1f} | {total:.1f} | {ratio:.2f}x | {same} |")
    print("\nrecovery: scenarios 1 and 3, from the kill to the end of the same run; scenario 2, "
          "the rerun.\ntotal: start of the first run to the end of the result (scenario 1 vs the "
          "undisturbed\ncluster run, 2 vs the undisturbed LocalCluster run, 3 vs the undisturbed "
          "torchrun job).")
    return 0


def training_rows(workdir: Path) -> list[tuple]:
    reference = rank_scenario(workdir / "train_reference", kill=False)
    rows = [("undisturbed torchrun job (tiny, DP 2)", "-", reference["seconds"],
             reference["seconds"], 1.0, "reference")]
    three = rank_scenario(workdir / "train_rank_kill", kill=True, timeout=120)
    expected, got = final_losses(reference["run_dir"]), final_losses(three["run_dir"])
    differing = [step for step in expected if got.get(step) != expected[step]]
    same = "yes" if not differing and got.keys() == expected.keys() else (
        f"**NO**: {len(differing)} steps differ or missing, first {differing[:3]}")
    if three["rc"] != 0:
        same = f"**NO**: the restarted job failed (exit {three['rc']}; see the torchrun.log)"
    if three["resumed"]:
        print(f"scenario 3: killed at {three['killed_at_s']:.1f} s; the restarted group "
              f"{three['resumed'][-1]} {three['resumed_at_s'] - three['killed_at_s']:.1f} s "
              "after the kill", flush=True)
    rows.append((f"3: rank 1 of 2 SIGKILLed after step {TRAIN_KILL_AFTER} (checkpoints every "
                 f"{TRAIN_SAVE_EVERY}), torchrun --max-restarts 1",
                 f"{three['killed_at_s']:.1f}", three["seconds"] - three["killed_at_s"],
                 three["seconds"], three["seconds"] / reference["seconds"], same))
    print(rows[-1], flush=True)
    return rows


def curation_rows(workdir: Path, args, scenarios: set[str]) -> list[tuple]:
    spec = write_fault_corpus(workdir, args.scale, args.partition_rows)
    print(f"workdir {workdir}; demo corpus scale {args.scale}, "
          f"partition_rows {args.partition_rows}", flush=True)

    with loopback_cluster(workdir / "ref_cluster") as cluster:
        ref_cluster_s = run_curate(spec, workdir / "ref_cluster_out", workdir / "ref1.log",
                                   scheduler=cluster.address)
    ref_local_s = run_curate(spec, workdir / "ref_local_out", workdir / "ref2.log")
    reference = snapshot(workdir / "ref_local_out")
    rows = [("undisturbed, `dask scheduler` + 2 `dask worker`", "-", ref_cluster_s,
             ref_cluster_s, 1.0, _same(reference, workdir / "ref_cluster_out")),
            ("undisturbed, LocalCluster of 2 workers", "-", ref_local_s, ref_local_s, 1.0,
             "reference")]
    for name in ("heuristics", "exact_dedup") if "1" in scenarios else ():
        one = worker_scenario(spec, workdir / f"worker_{name}", KILL_POINTS[name])
        rows.append((f"1: one of 2 workers SIGKILLed in {one['point'].label}",
                     f"{one['killed_at_s']:.1f}", one["seconds"] - one["killed_at_s"],
                     one["seconds"], one["seconds"] / ref_cluster_s,
                     _same(reference, one["out"])))
        print(rows[-1], flush=True)
    for name, point in KILL_POINTS.items() if "2" in scenarios else ():
        two = rerun_scenario(spec, workdir / f"run_{name}", point)
        rows.append((f"2: `curate run` SIGKILLed in {point.label}, then rerun",
                     f"{two['killed_at_s']:.1f}", two["rerun_s"],
                     two["killed_at_s"] + two["rerun_s"],
                     (two["killed_at_s"] + two["rerun_s"]) / ref_local_s,
                     _same(reference, two["out"])))
        print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
