"""ZeRO stages 0-3 on CPU (gloo): per stage at DP 1, 2, 4 the model-state bytes rank 0 holds
(counted from its tensors, metrics.jsonl's first line) against the paper's formula, the
bytes each rank sends per step in the DP collectives it calls (counted at the calls, ring
cost: (N-1)/N of the buffer per reduce-scatter or all-gather, twice that per all-reduce)
against the paper's volume (2Ψ for stages 0-2, 3Ψ for stage 3, times (N-1)/N for a ring;
one micro-batch per rank, as the paper counts), and step time and comm share against
stage 1. Stage 3 also reports the most parameters it had gathered at once (the live layers).
Then the paper's table for the shipped gpt_1.3b and mtnlg_530b configs.

    .venv/bin/python -m bench.zero [--steps 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from training.config import TrainingConfig, load_config, padded_vocab_size
from training.launch import launch
from training.model import count_parameters
from training.parallel import comm
from training.parallel.grid import destroy_grid
from training.parallel.zero_memory import predicted_bytes
from training.trainer import Trainer, setup_process

SKIP = 2
STAGES = (0, 1, 2, 3)


def bench_config(run_dir: str, steps: int, dp: int, zero: int) -> dict:
    return {
        "model": {"layers": 2, "hidden": 128, "heads": 4, "seq_len": 64, "vocab_size": 2048,
                  "dropout": 0.0},
        "parallel": {"dp": dp, "zero": zero, "bucket_mb": 0.25},
        "batch": {"micro": 8 // dp, "global": 8},  # one micro-batch per rank
        "optim": {"lr": 1e-3},
        "train": {"steps": steps, "dir": run_dir, "log_every": 1000},
        "data": {"synthetic": True},
        "dtype": "bf16",
    }


class SentBytes:
    """Wraps the bucket collectives of training.parallel.comm to add up the ring bytes this
    rank sends: (N-1)/N of the full buffer per reduce-scatter and all-gather, twice that per
    all-reduce."""

    def __init__(self, group_size: int) -> None:
        self.total, self.n = 0.0, group_size
        share = (group_size - 1) / group_size
        self.originals = {name: getattr(comm, name) for name in
                          ("reduce_scatter_async", "all_gather_into", "all_gather_async",
                           "all_reduce_async")}

        def counted(name, full_arg, factor):
            def call(*args, **kwargs):
                buffer = args[full_arg]
                self.total += factor * share * buffer.numel() * buffer.element_size()
                return self.originals[name](*args, **kwargs)
            return call

        comm.reduce_scatter_async = counted("reduce_scatter_async", 1, 1)
        comm.all_gather_into = counted("all_gather_into", 0, 1)
        comm.all_gather_async = counted("all_gather_async", 0, 1)
        comm.all_reduce_async = counted("all_reduce_async", 0, 2)

    def restore(self) -> None:
        for name, original in self.originals.items():
            setattr(comm, name, original)


def measure(cfg_dicts: list[dict]) -> list[dict]:
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        sent = SentBytes(trainer.buckets.dp)
        records = trainer.run()
        sent.restore()
        trainer.close()
        numel = sum(p.numel() for p in trainer.buckets.offsets)
        gatherer = trainer.gatherer
        results.append({"numel": numel, "memory": {k: records[0][k] for k in
                                                   ("mem_params", "mem_grads", "mem_optim")},
                        "peak_gathered": gatherer.peak_gathered if gatherer else None,
                        "sent": sent.total / len(records),
                        "step_s": statistics.median(r["step_s"] for r in records[SKIP:]),
                        "comm_share": statistics.median(r["comm_share"] for r in records[SKIP:])})
    destroy_grid()
    return results


def paper_table() -> None:
    print("\npaper's bytes per GPU (bf16 params/grads, fp32 master + Adam), shipped configs:")
    print("| config | Ψ per model-parallel rank | N (dp × cp) | stage 0 | stage 1 | stage 2 "
          "| stage 3 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("gpt_1.3b", "mtnlg_530b"):
        cfg = load_config(name)
        total = count_parameters(cfg.model, padded_vocab_size(50257, cfg.model.pad_vocab_to))
        per_rank = total / (cfg.parallel.tp * cfg.parallel.pp)
        cells = [sum(predicted_bytes(s, per_rank, cfg.parallel.dp, cp=cfg.parallel.cp).values())
                 / 2**30
                 for s in (0, 1, 2, 3)]
        print(f"| {name} ({total / 1e9:.2f}B, tp {cfg.parallel.tp} pp {cfg.parallel.pp}) | "
              f"{per_rank / 1e6:.0f}M | {cfg.parallel.dp * cfg.parallel.cp} | "
              + " | ".join(f"{c:.2f} GiB" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    print("| stage | DP | params B (paper) | grads B (paper) | optim B (paper) | total vs paper "
          "| DP bytes sent per step (paper) | sent vs paper | step s | comm share "
          "| step vs stage 1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    peaks = []
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
            volume = 3 if zero == 3 else 2  # Ψ elements, bf16, ring share
            paper = volume * (dp - 1) / dp * res["numel"] * 2
            sent_ratio = f"{res['sent'] / paper:.2f}" if paper else "-"
            print(f"| {zero} | {dp} | " + " | ".join(cells) + f" | {ratio:.3f} | "
                  f"{res['sent']:,.0f} ({paper:,.0f}) | {sent_ratio} | {res['step_s']:.3f} | "
                  f"{100 * res['comm_share']:.1f}% | {res['step_s'] / base:.2f}x |")
            if zero == 3:
                peaks.append((dp, res["peak_gathered"], res["numel"]))
    print("\nstage 3: most parameters gathered at once (the live layers, padding included):")
    for dp, peak, numel in peaks:
        print(f"- DP {dp}: {peak:,} of {numel:,} ({100 * peak / numel:.0f}%)")
    paper_table()


if __name__ == "__main__":
    main()
