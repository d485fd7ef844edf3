"""Context parallelism on CPU: tokens/s and communication share of CP 2 against CP 1 for
llama_tiny at sequence 1024 and 4096, and the attention core's saved activation memory per
rank at CP 1, 2 and 4.

1. `pretrain`'s Trainer (gloo ranks on this machine), llama_tiny with `seq_len` set, micro and
   global batch 1; the median of the step records after the first (warm-up) step, and the
   CPU seconds per step summed over the ranks (process time: less sensitive than wall time
   to other jobs on a shared machine).
2. Bytes autograd keeps for the backward of one attention core call (q, k, v of one rank's
   slice of a [1, 4 heads, seq, 16] problem), ring attention at CP 1/2/4, with
   `scaled_dot_product_attention` (one process) for reference: what the core adds (q, k, v
   excluded), and with the local q, k, v it keeps.

    .venv/bin/python bench/context_parallel.py [--steps 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.distributed as dist

from training.config import TrainingConfig, load_config
from training.launch import launch
from training.parallel.context import RingAttention
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process


def train_worker(cfg_dict: dict) -> dict | None:
    setup_process()
    torch.set_flush_denormal(True)
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    trainer.run(until=1)  # warm-up
    start = time.process_time()
    records = trainer.run()
    cpu_per_step = (time.process_time() - start) / len(records)
    trainer.close()
    rank = trainer.grid.rank
    destroy_grid()
    if rank:
        return {"cpu_s": cpu_per_step}
    return {"cpu_s": cpu_per_step, **{key: statistics.median(r[key] for r in records)
                                       for key in ("tokens_per_s", "comm_share", "step_s")}}


def throughput(seq: int, cp: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config("llama_tiny", [
            f"model.seq_len={seq}", f"parallel.cp={cp}", "batch.micro=1", "batch.global=1",
            f"train.steps={steps}", "train.eval_every=0", "train.save_every=0",
            f"train.dir={run_dir}", "parallel.zero=0"]).dump()
        found = launch(cp, train_worker, cfg)
        return {**found[0], "cpu_s": sum(r["cpu_s"] for r in found.values())}


def saved_bytes(core, q, k, v) -> tuple[int, int]:
    """(bytes the core adds, bytes with the inputs it keeps)."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = core(q, k, v)
    out.sum().backward()
    with_inputs = sum(storages.values())
    for tensor in (q, k, v):  # inputs are the caller's, not the core's
        storages.pop(tensor.untyped_storage().data_ptr(), None)
    return sum(storages.values()), with_inputs


def memory_worker(seq: int) -> tuple[int, int]:
    dist.init_process_group("gloo")
    cp, rank = dist.get_world_size(), dist.get_rank()
    q, k, v = (torch.randn(1, 4, seq // cp, 16, requires_grad=True) for _ in range(3))
    found = saved_bytes(RingAttention(dist.group.WORLD, list(range(cp)), rank), q, k, v)
    dist.destroy_process_group()
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    print("| seq | CP | tokens/s | comm share | step s | CPU s/step (all ranks) |\n"
          "|---:|---:|---:|---:|---:|---:|")
    for seq in (1024, 4096):
        for cp in (1, 2):
            r = throughput(seq, cp, args.steps)
            print(f"| {seq} | {cp} | {r['tokens_per_s']:,.0f} | {r['comm_share']:.2f} | "
                  f"{r['step_s']:.2f} | {r['cpu_s']:.2f} |", flush=True)
    seq = 4096
    q, k, v = (torch.randn(1, 4, seq, 16, requires_grad=True) for _ in range(3))
    sdpa = saved_bytes(lambda *t: torch.nn.functional.scaled_dot_product_attention(
        *t, is_causal=True), q, k, v)
    print(f"\nattention core, seq {seq}: saved bytes per rank (MiB)\n"
          "| core | CP | added by the core | with local q, k, v |\n|---|---:|---:|---:|\n"
          f"| sdpa (fused, one process) | 1 | {sdpa[0] / 2**20:.2f} | {sdpa[1] / 2**20:.2f} |")
    for cp in (1, 2, 4):
        found = launch(cp, memory_worker, seq)
        added, with_inputs = (max(values) for values in zip(*found.values(), strict=True))
        print(f"| ring | {cp} | {added / 2**20:.2f} | {with_inputs / 2**20:.2f} |", flush=True)


if __name__ == "__main__":
    main()
