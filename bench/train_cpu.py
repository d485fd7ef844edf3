"""Trainer overhead and communication share on CPU.

1. tokens/s of `pretrain` at TP = PP = DP = 1 (the Trainer, as `pretrain CONFIG` runs a world
   of one: metrics.jsonl and TensorBoard included) against a plain single-process nanoGPT-style
   loop of the same model, batch, data and optimizer written here, alternating, in one run.
   Target: ratio >= 0.95.
2. The share of step time spent in communication at TP=2 and at DP=2 (2 gloo ranks on this
   machine): blocking collectives plus waits on the bucketed gradient reductions, i.e. the
   communication not hidden behind compute.

    .venv/bin/python bench/train_cpu.py [--steps 10]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from training.batches import SyntheticBatchSource
from training.config import TrainingConfig
from training.launch import launch
from training.optim import learning_rate
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

WARMUP = 2


def bench_config(run_dir: str, steps: int, tp: int = 1, dp: int = 1, zero1: bool = True) -> dict:
    return {
        "model": {"layers": 4, "hidden": 256, "heads": 8, "seq_len": 128, "vocab_size": 4096},
        "parallel": {"tp": tp, "dp": dp, "zero": int(zero1)},
        "batch": {"micro": 8, "global": 16},
        "optim": {"lr": 3e-4, "min_lr": 3e-5, "warmup": 2, "weight_decay": 0.1, "clip": 1.0},
        "train": {"steps": steps, "eval_every": 0, "dir": run_dir, "seed": 1},
        "data": {"synthetic": True},
    }


# --- the reference: a plain nanoGPT-style model and loop --------------------------------------

class PlainBlock(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.c_attn, self.c_proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.c_fc, self.mlp_proj = nn.Linear(hidden, 4 * hidden), nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(h, dim=2)
        q, k, v = (t.view(b, s, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, s, h))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq_len: int, hidden: int, heads: int, layers: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, hidden), nn.Embedding(seq_len, hidden)
        self.blocks = nn.ModuleList(PlainBlock(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


class PlainLoop:
    """The reference training step: torch AdamW, clip_grad_norm_, gradient accumulation."""

    def __init__(self, cfg: TrainingConfig):
        m, o = cfg.model, cfg.optim
        self.cfg = cfg
        torch.manual_seed(1)
        self.model = PlainGPT(m.vocab_size, m.seq_len, m.hidden, m.heads, m.layers)
        self.params = list(self.model.parameters())
        self.adamw = torch.optim.AdamW(
            [{"params": [p for p in self.params if p.ndim >= 2], "weight_decay": o.weight_decay},
             {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0}],
            lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
        self.data = SyntheticBatchSource(m.vocab_size, m.seq_len, seed=1)
        self.steps = 0

    def step(self) -> None:
        b, o = self.cfg.batch, self.cfg.optim
        batch = self.data.local_batch(self.steps * b.global_batch, b.global_batch, 0, 1)
        self.steps += 1
        micro_batches = batch.split(b.micro)
        for micro in micro_batches:
            (self.model(micro[:, :-1], micro[:, 1:]) / len(micro_batches)).backward()
        torch.nn.utils.clip_grad_norm_(self.params, o.clip)
        for group in self.adamw.param_groups:
            group["lr"] = learning_rate(self.steps, o, self.cfg.train.steps)
        self.adamw.step()
        self.adamw.zero_grad(set_to_none=True)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def comm_worker(cfg_dict: dict) -> dict:
    setup_process()
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    records = trainer.run()[WARMUP:]
    trainer.close()
    destroy_grid()
    return {"comm_share": statistics.mean(r["comm_share"] for r in records),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    args = parser.parse_args()
    setup_process()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainingConfig.model_validate(bench_config(tmp, WARMUP + args.steps))
        m = cfg.model
        print(f"model: {m.layers} layers, hidden {m.hidden}, heads {m.heads}, seq {m.seq_len}, "
              f"vocab {m.vocab_size}; batch {cfg.batch.micro} x "
              f"{cfg.batch.global_batch // cfg.batch.micro} micro-batches; "
              f"{torch.get_num_threads()} threads")
        # Alternate single steps so both loops see the same machine load (2 shared cores).
        plain, trainer = PlainLoop(cfg), Trainer(cfg)
        plain_s, ours_s = [], []
        for step in range(WARMUP + args.steps):
            plain_time = timed(plain.step)
            ours_time = timed(lambda: trainer.run(until=trainer.step + 1))  # logs as pretrain
            if step >= WARMUP:
                plain_s.append(plain_time)
                ours_s.append(ours_time)
        trainer.close()
        destroy_grid()
        tokens = cfg.batch.global_batch * m.seq_len
        ours, ref = tokens / statistics.median(ours_s), tokens / statistics.median(plain_s)
        print(f"median over {args.steps} alternating steps: pretrain {ours:.0f} tok/s, "
              f"plain loop {ref:.0f} tok/s, ratio {ours / ref:.3f} (target >= 0.95)")
        for tp, dp, zero1 in [(2, 1, True), (1, 2, False), (1, 2, True)]:
            layout = bench_config(tmp, WARMUP + args.steps, tp=tp, dp=dp, zero1=zero1)
            result = launch(tp * dp, comm_worker, layout)[0]
            print(f"TP={tp} DP={dp} zero1={zero1}: communication {100 * result['comm_share']:.1f}% "
                  f"of step time, {result['tokens_per_s']:.0f} tok/s (2 ranks, 1 thread each)")


if __name__ == "__main__":
    main()
