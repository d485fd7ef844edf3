"""Pipeline bubble, measured against the schedule's own figure.

For PP = 2 and 4, m = 4, 8, 16 micro-batches, 1F1B and interleaved 1F1B (v = 2), the runtime
executes one global batch's forward and backward on real gloo processes (CPU, one thread per
rank). Per rank, idle share = 1 - compute time / wall time of the whole pipeline pass (from a
barrier before to a barrier after, so every rank is timed over the same makespan). Next to it:
`schedule_sim`'s `Timeline.idle_share` of the same schedule (equal stages, free communication;
for these schedules it does not depend on t_b / t_f, which is printed as measured) and the
paper's bubble fraction ((p-1)/m, (p-1)/(v m): bubble over ideal time).

    .venv/bin/python bench/pipeline.py [--steps 3] [--pp 2 4] [--micro 4 8 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from training.config import TrainingConfig
from training.launch import launch
from training.parallel import comm
from training.parallel.grid import destroy_grid
from training.parallel.schedule_sim import bubble_fraction, simulate
from training.parallel.schedules import Kind, build_schedule
from training.trainer import Trainer, setup_process

SCHEDULES = (("1f1b", 1), ("interleaved", 2))


def bench_config(pp: int, m: int, schedule: str, v: int, run_dir: str) -> dict:
    micro = 2
    return {
        "model": {"layers": 8, "hidden": 256, "heads": 8, "seq_len": 128, "vocab_size": 512,
                  "pad_vocab_to": 128},
        "parallel": {"pp": pp, "schedule": schedule, "virtual_stages": v},
        "batch": {"micro": micro, "global": micro * m},
        "optim": {"lr": 1e-3},
        "train": {"steps": 1, "dir": run_dir},
        "data": {"synthetic": True},
    }


def measure(cfg_dicts: list[dict], steps: int) -> list[dict]:
    """Worker: per config, `steps` timed pipeline passes after one warm-up pass."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        runtime = trainer.pipeline
        micro_batches = trainer._micro_batches(trainer.train_source, 0,
                                               trainer.cfg.batch.global_batch)
        shares, forward, backward = [], 0.0, 0.0
        for step in range(steps + 1):
            trainer.buckets.zero_grad()
            runtime.compute_seconds = {Kind.FORWARD: 0.0, Kind.BACKWARD: 0.0}
            comm.barrier()
            start = time.perf_counter()
            runtime.run(micro_batches)
            comm.barrier()
            wall = time.perf_counter() - start
            if step == 0:
                continue  # warm-up: allocator, first-touch, thread pools
            busy = sum(runtime.compute_seconds.values())
            shares.append(1.0 - busy / wall)
            forward += runtime.compute_seconds[Kind.FORWARD]
            backward += runtime.compute_seconds[Kind.BACKWARD]
        trainer.close()
        results.append({"idle": statistics.median(shares), "forward": forward,
                         "backward": backward})
    destroy_grid()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pp", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--micro", type=int, nargs="+", default=[4, 8, 16])
    args = parser.parse_args()
    print("| schedule | p | m | v | rank | compute s | t_b / t_f | measured idle "
          "| schedule idle share | bubble fraction (paper) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for pp in args.pp:
        runs = [(schedule, v, m) for schedule, v in SCHEDULES for m in args.micro]
        with tempfile.TemporaryDirectory() as tmp:
            configs = [bench_config(pp, m, schedule, v, f"{tmp}/{i}")
                       for i, (schedule, v, m) in enumerate(runs)]
            per_rank = launch(pp, measure, configs, args.steps)
        for i, (schedule, v, m) in enumerate(runs):
            results = [per_rank[rank][i] for rank in range(pp)]
            plan = build_schedule(schedule, pp, m, v)
            timeline, bubble = simulate(plan), bubble_fraction(plan)
            for rank in range(pp):
                mine = results[rank]
                busy = (mine["forward"] + mine["backward"]) / args.steps
                print(f"| {schedule} | {pp} | {m} | {v} | {rank} | {busy:.3f} "
                      f"| {mine['backward'] / mine['forward']:.2f} | {mine['idle']:.3f} "
                      f"| {float(timeline.idle_share(rank)):.3f} | {float(bubble):.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()
