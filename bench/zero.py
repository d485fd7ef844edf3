"""ZeRO stages on CPU (gloo): per stage at DP 1, 2, 4 the model-state bytes rank 0 holds
(counted from its tensors, metrics.jsonl's first line) against the paper's formula, the
gradient/parameter elements each rank passes to DP collectives per step against the paper's
volume (2Ψ for stages 0-2), and step time and comm share against stage 1. Then the paper's
table for the shipped gpt_1.3b and mtnlg_530b configs.

    .venv/bin/python -m bench.zero [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from training.config import TrainingConfig, load_config, padded_vocab_size
from training.launch import launch
from training.loop import Trainer, setup_process
from training.model import count_parameters
from training.parallel.grid import destroy_grid
from training.parallel.zero_memory import predicted_bytes

SKIP = 2
STAGES = (0, 1, 2)


def bench_config(run_dir: str, steps: int, dp: int, zero: int) -> dict:
    return {
        "model": {"layers": 4, "hidden": 256, "heads": 8, "seq_len": 128, "vocab_size": 4096,
                  "dropout": 0.0},
        "parallel": {"dp": dp, "zero": zero, "bucket_mb": 0.5},
        "batch": {"micro": 2, "global": 8},
        "optim": {"lr": 1e-3},
        "train": {"steps": steps, "dir": run_dir, "log_every": 1000},
        "data": {"synthetic": True},
        "dtype": "bf16",
    }


def ring_volume(trainer: Trainer) -> float:
    """Elements this rank sends per step in ring collectives over DP: an all-reduce sends
    2(N-1)/N of the buffer, a reduce-scatter and an all-gather (N-1)/N each (the paper's
    2Ψ for stages 0-2, in units of Ψ once divided by the parameters)."""
    n = trainer.buckets.dp
    padded = trainer.buckets.numel
    return 2 * (n - 1) / n * padded if n > 1 else 0.0


def measure(cfg_dicts: list[dict]) -> list[dict]:
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        records = trainer.run()
        trainer.close()
        numel = sum(p.numel() for p in trainer.buckets.offsets)
        results.append({"numel": numel, "memory": {k: records[0][k] for k in
                                                   ("mem_params", "mem_grads", "mem_optim")},
                        "volume": ring_volume(trainer),
                        "step_s": statistics.median(r["step_s"] for r in records[SKIP:]),
                        "comm_share": statistics.median(r["comm_share"] for r in records[SKIP:])})
    destroy_grid()
    return results


def paper_table() -> None:
    print("\npaper's bytes per GPU (bf16 params/grads, fp32 master + Adam), shipped configs:")
    print("| config | Ψ per model-parallel rank | N (dp) | stage 0 | stage 1 | stage 2 | stage 3 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("gpt_1.3b", "mtnlg_530b"):
        cfg = load_config(name)
        total = count_parameters(cfg.model, padded_vocab_size(50257, cfg.model.pad_vocab_to))
        per_rank = total / (cfg.parallel.tp * cfg.parallel.pp)
        cells = [sum(predicted_bytes(s, per_rank, cfg.parallel.dp).values()) / 2**30
                 for s in (0, 1, 2, 3)]
        print(f"| {name} ({total / 1e9:.2f}B, tp {cfg.parallel.tp} pp {cfg.parallel.pp}) | "
              f"{per_rank / 1e6:.0f}M | {cfg.parallel.dp} | "
              + " | ".join(f"{c:.2f} GiB" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    print("| stage | DP | params B (paper) | grads B (paper) | optim B (paper) | total vs paper "
          "| DP volume / Ψ (paper) | step s | comm share | step vs stage 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dp in (1, 2, 4):
        with tempfile.TemporaryDirectory() as tmp:
            configs = [bench_config(f"{tmp}/z{z}", args.steps, dp, z) for z in STAGES]
            per_rank = launch(dp, measure, configs) if dp > 1 else {0: measure(configs)}
        results = per_rank[0]
        base = results[1]["step_s"]
        for zero, res in zip(STAGES, results, strict=True):
            want = predicted_bytes(zero, res["numel"], dp)
            got = res["memory"]
            cells = [f"{got[k]:,} ({want[k]:,.0f})" for k in want]
            ratio = sum(got.values()) / sum(want.values())
            volume = res["volume"] / res["numel"]
            print(f"| {zero} | {dp} | " + " | ".join(cells) + f" | {ratio:.3f} | "
                  f"{volume:.2f} ({2 * (dp - 1) / dp:.2f}) | {res['step_s']:.3f} | "
                  f"{100 * res['comm_share']:.1f}% | {res['step_s'] / base:.2f}x |")
    paper_table()


if __name__ == "__main__":
    main()
