"""The single-GPU check of the trainer, in under 5 minutes on one CUDA device:

1. throughput: a GPT 1.3B-shaped model (`gpt_1.3b.yaml`: 24 layers, hidden 2048, 16 heads,
   seq 2048) at (TP, PP, DP) = (1, 1, 1) in bf16 on synthetic tokens: tokens/s, TFLOP/s per
   device and MFU against the device's dense bf16 peak (from its name, or --peak-tflops);
2. equivalence: the tiny fp32 run of the equivalence tests on the device against the same run
   on the CPU, loss by loss;
3. resume: that run saved at step 3 and resumed to step 6 on the device equals the straight
   run (the resume path's collectives on an NCCL world, which used to crash).

Without CUDA (or with --device cpu) the same code runs with the tiny config standing in for
the 1.3B one: the suite's smoke test (tests/test_gpu_check.py).

    .venv/bin/python -m bench.gpu_check [--device cuda|cpu] [--steps 6] [--peak-tflops T]

Exit status 1 when the equivalence or resume check fails.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import torch

from training.checkpoint import save_checkpoint
from training.config import load_config
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

# Dense bf16 peaks (TFLOP/s) by a substring of torch.cuda.get_device_name(), first match wins.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0))
LOSS_RTOL = 1e-4  # fp32 CPU vs CUDA kernels: summation order differs, not the math


def device_peak(device: str) -> float | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def train(config: str, overrides: list[str], until: int | None = None) -> list[dict]:
    """One Trainer in a world of one (resuming from its dir's newest checkpoint, if any);
    the records of the steps it ran, saved at the end when `until` stops it early."""
    trainer = Trainer(load_config(config, overrides))
    try:
        return trainer.run(until, on_save=save_checkpoint if until else None)
    finally:
        trainer.close()
        destroy_grid()


def throughput(device: str, steps: int, run_dir: str, peak: float | None) -> dict:
    """Median figures over the steps after the first (allocator and kernel warm-up)."""
    if device == "cuda":
        config, shape = "gpt_1.3b", ["batch.micro=4", "batch.global=8", "model.dropout=0.0",
                                     "model.vocab_size=50257"]
    else:
        config, shape = "tiny", ["batch.micro=4", "batch.global=8"]
    overrides = shape + [
        "parallel.tp=1", "parallel.pp=1", "parallel.dp=1", "batch.rampup=null",
        f"train.steps={steps}", "train.eval_every=0", "train.save_every=0", f"train.dir={run_dir}",
        "data.curated=null", f"device={device}", "dtype=bf16",
        f"optim.peak_tflops={peak}" if peak else "optim.peak_tflops=null"]
    records = train(config, overrides)[1:]
    figures = {key: statistics.median(r[key] for r in records)
               for key in ("step_s", "tokens_per_s", "tflops")}
    figures["mfu"] = figures["tflops"] / peak if peak else None
    figures["config"] = config
    return figures


def tiny_run(device: str, run_dir: str, until: int | None = None) -> list[float]:
    """Losses of the tiny fp32 run of 6 steps (up to `until`, then saved)."""
    overrides = ["model.dropout=0.0", "batch.micro=2", "batch.global=8", "batch.rampup=null",
                 "train.steps=6", "train.eval_every=0", "train.save_every=3",
                 f"train.dir={run_dir}", "data.curated=null", f"device={device}", "dtype=fp32"]
    return [record["loss"] for record in train("tiny", overrides, until)]


def relative_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args(argv)
    setup_process()
    peak = args.peak_tflops or device_peak(args.device)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        figures = throughput(args.device, args.steps, f"{tmp}/throughput", peak)
        on_device = tiny_run(args.device, f"{tmp}/device")
        on_cpu = tiny_run("cpu", f"{tmp}/cpu")
        first_half = tiny_run(args.device, f"{tmp}/resume", until=3)
        second_half = tiny_run(args.device, f"{tmp}/resume")
    equivalence = relative_gap(on_device, on_cpu)
    resumed = relative_gap(first_half + second_half, on_device)
    mfu = f"{100 * figures['mfu']:.1f}%" if figures["mfu"] is not None else "n/a (peak unknown)"
    print(f"device: {name}; model: {figures['config']} at (1,1,1), bf16")
    print("| step s | tokens/s | TFLOP/s per device | MFU |\n|---|---|---|---|")
    print(f"| {figures['step_s']:.3f} | {figures['tokens_per_s']:.0f} "
          f"| {figures['tflops']:.2f} | {mfu} |")
    print(f"tiny fp32 losses, {args.device} vs cpu: max relative gap {equivalence:.2e} "
          f"(limit {LOSS_RTOL:.0e})")
    print(f"saved at step 3, resumed to 6 vs straight: max relative gap {resumed:.2e}")
    ok = equivalence <= LOSS_RTOL and resumed <= LOSS_RTOL and len(second_half) == 3
    print("gpu_check:", "PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
