"""Communication overlap and pipeline activation memory on CPU (gloo, 4 ranks on this machine).

1. Step time and comm share (exposed communication: host time inside blocking collectives and
   waits, see training/parallel/comm.py) at (TP, PP, DP) = (1,2,2), (2,2,1) with sequence
   parallelism, and (2,1,2): median over the steps after the first two, per rank, then the
   slowest rank's step time and the ranks' mean comm share. The script uses only the
   Trainer's public behaviour (metrics records), so the same file run from a checkout of an
   older commit measures the "before" (see bench/RESULTS.md for the exact commands).
2. With --memory: live activation bytes per rank against the micro-batches in flight, under
   GPipe and 1F1B at PP = 4, m = 8 (PipelineRuntime.memory_snapshot, after every compute).

    .venv/bin/python -m bench.overlap [--steps 8] [--memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from training.config import TrainingConfig
from training.launch import launch
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

LAYOUTS = (("(1,2,2)", dict(tp=1, pp=2, dp=2)),
           ("(2,2,1)+SP", dict(tp=2, pp=2, dp=1, sequence_parallel=True)),
           ("(2,1,2)", dict(tp=2, pp=1, dp=2)))
SKIP = 2


def bench_config(run_dir: str, steps: int, **parallel) -> dict:
    return {
        "model": {"layers": 4, "hidden": 256, "heads": 8, "seq_len": 128, "vocab_size": 4096,
                  "dropout": 0.0},
        "parallel": {"zero": 1, "bucket_mb": 0.5, **parallel},
        "batch": {"micro": 2, "global": 16},
        "optim": {"lr": 1e-3},
        "train": {"steps": steps, "dir": run_dir, "log_every": 1000},
        "data": {"synthetic": True},
    }


def measure(cfg_dicts: list[dict]) -> list[dict]:
    """Worker: per config, this rank's median step time and comm share."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        records = trainer.run()[SKIP:]
        trainer.close()
        results.append({"step_s": statistics.median(r["step_s"] for r in records),
                        "comm_share": statistics.median(r["comm_share"] for r in records)})
    destroy_grid()
    return results


def memory_trace(cfg_dict: dict) -> dict:
    """Worker: one pipeline pass recording `memory_snapshot()` (in flight, live activation
    bytes, output bytes) after every compute; also tests/test_comm_overlap.py's."""
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    runtime = trainer.pipeline
    runtime.memory = []
    micro = trainer._micro_batches(trainer.train_source, 0, trainer.cfg.batch.global_batch)
    runtime.run(micro)
    trainer.close()
    destroy_grid()
    return {"memory": runtime.memory, "rank": runtime.rank, "m": len(micro)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        configs = [bench_config(f"{tmp}/{i}", args.steps, **layout)
                   for i, (_, layout) in enumerate(LAYOUTS)]
        per_rank = launch(4, measure, configs)
        print("| layout | step s (slowest rank) | comm share (mean of ranks) |\n|---|---|---|")
        for i, (name, _) in enumerate(LAYOUTS):
            results = [per_rank[rank][i] for rank in sorted(per_rank)]
            print(f"| {name} | {max(r['step_s'] for r in results):.3f} "
                  f"| {statistics.mean(r['comm_share'] for r in results):.3f} |", flush=True)
        if args.memory:
            print("\n| schedule | rank | peak in flight | peak live activation MB "
                  "| MB per in-flight micro-batch | stage-output bytes held |\n"
                  "|---|---|---|---|---|---|")
            for schedule in ("gpipe", "1f1b"):
                cfg = bench_config(f"{tmp}/mem-{schedule}", 1, pp=4, schedule=schedule)
                cfg["batch"] = {"micro": 2, "global": 16}
                for result in sorted(launch(4, memory_trace, cfg).values(),
                                     key=lambda r: r["rank"]):
                    memory = result["memory"]
                    peak_n, peak_bytes, _ = max(memory, key=lambda entry: entry[1])
                    outputs = max(entry[2] for entry in memory)
                    print(f"| {schedule} | {result['rank']} | {peak_n} "
                          f"| {peak_bytes / 2**20:.2f} | {peak_bytes / peak_n / 2**20:.3f} "
                          f"| {outputs} |", flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
