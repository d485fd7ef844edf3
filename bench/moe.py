"""MoE on CPU (gloo): moe_tiny's tokens/s at EP 1, 2 and 4 (DP = EP, so EDP = 1), the share
of step time in the token all-to-alls, dropless against capacity factors 1.0 and 1.25 (at
EP 2), and model FLOPs utilisation counted on *active* parameters:

    MFU = 3 x (2 x (attention weights + E h + (k + s) 3 h f, per MoE block, + the logits'
          h V) + 4 s h per block for the attention scores) x tokens / step time / ranks / peak

(training/metrics.py's flops_per_step; `--peak-tflops` is the per-rank peak the MFU divides
by). Every rank runs one thread, so EP k uses k cores: tokens/s per rank is what compares
the layouts' efficiency. Then memory and compute of the paper's configs from formulas
(training/moe/sizing.py).

    .venv/bin/python -m bench.moe [--steps 6] [--peak-tflops 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from training.config import TrainingConfig, load_config
from training.launch import launch
from training.moe.sizing import moe_size
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

SKIP = 2


def moe_tiny(run_dir: str, steps: int, ep: int, capacity: float | None) -> dict:
    raw = load_config("moe_tiny").dump()
    raw["parallel"].update(dp=ep, ep=ep, zero=0)
    raw["model"]["moe"]["capacity_factor"] = capacity
    raw["train"].update(steps=steps, eval_every=0, save_every=0, dir=run_dir, log_every=1000)
    return raw


def measure(cfg_dicts: list[dict]) -> list[list[dict]]:
    setup_process()
    # One thread per rank at every EP: on a shared machine a multi-threaded single process
    # spins in OpenMP barriers, which would flatter every EP > 1 against EP 1.
    torch.set_num_threads(1)
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        results.append(trainer.run())
        trainer.close()
    destroy_grid()
    return results


def summarise(records: list[dict], peak: float) -> dict:
    kept = records[SKIP:]
    step = statistics.median(r["step_s"] for r in kept)
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in kept),
            "a2a_share": statistics.median(r["moe_a2a_s"] / r["step_s"] for r in kept),
            "comm_share": statistics.median(r["comm_share"] for r in kept),
            "dropped": statistics.mean(r["moe_dropped_frac"] for r in kept),
            "mfu": statistics.median(r["tflops"] for r in kept) / peak, "step_s": step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--peak-tflops", type=float, default=1.0,
                        help="per-rank peak for the MFU column (a CPU core: ~1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for ep in (1, 2, 4):
            captures = [None, 1.0, 1.25] if ep == 2 else [None]
            configs = [moe_tiny(f"{tmp}/ep{ep}_{c}", args.steps, ep, c) for c in captures]
            records = launch(ep, measure, configs)[0]
            for capacity, run in zip(captures, records, strict=True):
                runs[(ep, capacity)] = summarise(run, args.peak_tflops)
    base = runs[(1, None)]["tokens_per_s"]
    print("moe_tiny (4 layers, 8 experts, top-2), gloo on CPU, median of steps "
          f"{SKIP + 1}-{args.steps}")
    print("| EP | capacity | tokens/s | per rank vs EP 1 | all-to-all share | comm share | "
          "dropped | MFU (active) |")
    print("|---|---|---|---|---|---|---|---|")
    for (ep, capacity), r in runs.items():
        print(f"| {ep} | {capacity or 'dropless'} | {r['tokens_per_s']:.0f} | "
              f"{r['tokens_per_s'] / ep / base:.2f}x | {100 * r['a2a_share']:.1f}% | "
              f"{100 * r['comm_share']:.1f}% | {100 * r['dropped']:.1f}% | "
              f"{100 * r['mfu']:.2f}% |")
    print()
    print("| config | ranks | total params | active params | bytes/rank (ZeRO-1) | "
          "training GFLOPs/token |")
    print("|---|---|---|---|---|---|")
    for name in ("mixtral_8x22b", "qwen2_57b_a14b"):
        cfg = load_config(name)
        size = moe_size(cfg)
        print(f"| {name} | {cfg.parallel.world_size} | {size.total / 1e9:.1f}B | "
              f"{size.active / 1e9:.1f}B | {size.bytes_per_rank / 2**30:.1f} GiB | "
              f"{size.flops_per_token / 1e9:.0f} |")


if __name__ == "__main__":
    main()
