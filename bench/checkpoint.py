"""Checkpoint save and load time and bytes for a ~100M-parameter GPT at several layouts.

Per layout (real gloo ranks on this machine): `save_checkpoint` (gather of the ZeRO moments,
safetensors shards, sha256, index, rename), `resume_latest` (every rank verifies a share of
the sha256s, then loads its boxes of the global tensors) and `load_checkpoint` alone. The
reference, measured in the same run at (1,1,1): one `torch.save` of the parameters and both
Adam moments, and its `torch.load(weights_only=True)`.

    .venv/bin/python bench/checkpoint.py [--layouts 1,1,1 2,2,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from training.checkpoint import (
    global_parameters,
    load_checkpoint,
    resume_latest,
    save_checkpoint,
)
from training.config import TrainingConfig
from training.launch import launch
from training.model import count_parameters
from training.parallel import comm
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

MODEL = {"layers": 12, "hidden": 768, "heads": 12, "seq_len": 512, "vocab_size": 16384}


def config(run_dir: str, tp: int, pp: int, dp: int) -> dict:
    return {"model": MODEL, "parallel": {"tp": tp, "pp": pp, "dp": dp, "zero": 1},
            "batch": {"micro": 1, "global": dp}, "optim": {"lr": 1e-4},
            "train": {"steps": 1, "save_every": 1, "dir": run_dir},
            "data": {"synthetic": True}}


def timed(fn) -> float:
    comm.barrier()
    start = time.perf_counter()
    fn()
    comm.barrier()
    return time.perf_counter() - start


def worker(cfg_dict: dict) -> dict | None:
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    trainer.optimizer.exp_avg.normal_()  # real-looking moments: nothing compresses
    trainer.optimizer.exp_avg_sq.uniform_()
    path = []
    save = timed(lambda: path.append(save_checkpoint(trainer)))
    resume = timed(lambda: resume_latest(trainer))
    load = timed(lambda: load_checkpoint(trainer, path[0]))
    result = None
    if trainer.grid.rank == 0:
        files = list(path[0].iterdir())
        result = {"save_s": save, "resume_s": resume, "load_s": load, "files": len(files),
                  "bytes": sum(f.stat().st_size for f in files)}
    trainer.close()
    destroy_grid()
    return result


def reference(cfg_dict: dict, run_dir: Path) -> dict:
    """One torch.save / torch.load(weights_only=True) of parameters and Adam moments."""
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    optimizer, names = trainer.optimizer, {p: n for n, p in global_parameters(trainer)}
    state = {f"model/{name}": param.detach() for name, param in global_parameters(trainer)}
    for seg in optimizer.segments:  # one process: every parameter is one whole segment
        for kind in ("exp_avg", "exp_avg_sq"):
            state[f"{kind}/{names[seg.param]}"] = optimizer.state_of(seg, kind).view_as(seg.param)
    path = run_dir / "reference.pt"
    start = time.perf_counter()
    torch.save(state, path)
    save = time.perf_counter() - start
    start = time.perf_counter()
    torch.load(path, weights_only=True)
    load = time.perf_counter() - start
    trainer.close()
    destroy_grid()
    return {"save_s": save, "load_s": load, "bytes": path.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", nargs="+", default=["1,1,1", "2,2,2"],
                        help="TP,PP,DP triples")
    args = parser.parse_args()
    cfg = TrainingConfig.model_validate(config("x", 1, 1, 1))
    params = count_parameters(cfg.model, cfg.model.vocab_size)
    print(f"model: {params / 1e6:.1f}M parameters, fp32 weights + 2 Adam moments = "
          f"{3 * 4 * params / 2**20:.0f} MiB of tensors")
    with tempfile.TemporaryDirectory() as tmp:
        ref = reference(config(str(Path(tmp) / "ref"), 1, 1, 1), Path(tmp))
        print(f"reference torch.save: save {ref['save_s']:.2f} s, torch.load {ref['load_s']:.2f}"
              f" s, {ref['bytes'] / 2**20:.0f} MiB")
        print("| layout (TP,PP,DP) | files | MiB | save s | save vs torch.save | resume s "
              "(verify + load) | load s | load vs torch.load |")
        print("|---|---|---|---|---|---|---|---|")
        for layout in args.layouts:
            tp, pp, dp = map(int, layout.split(","))
            run_dir = str(Path(tmp) / f"run-{tp}-{pp}-{dp}")
            cfg_dict = config(run_dir, tp, pp, dp)
            r = worker(cfg_dict) if tp * pp * dp == 1 else \
                launch(tp * pp * dp, worker, cfg_dict)[0]
            print(f"| ({tp},{pp},{dp}) | {r['files']} | {r['bytes'] / 2**20:.0f} | "
                  f"{r['save_s']:.2f} | {r['save_s'] / ref['save_s']:.2f}x | "
                  f"{r['resume_s']:.2f} | {r['load_s']:.2f} | "
                  f"{r['load_s'] / ref['load_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
