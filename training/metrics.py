"""Per-step figures as Megatron-LM reports them, written where DESIGN.md says: the console,
`train.dir/metrics.jsonl` and TensorBoard events under `train.dir/tb` (rank 0 only)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from training.config import ModelConfig


def flops_per_step(cfg: ModelConfig, vocab_size: int, global_batch: int) -> float:
    """Model FLOPs of one training step without recomputation (Narayanan et al., 2021, eq. 3
    with the 96 of full recomputation replaced by 72), generalised to any block: 3 (forward +
    backward) x 2 FLOPs per multiply-add of every weight matrix, the attention scores and
    values (4 s h per token and layer, causal mask not discounted, as the paper counts) and the
    logits. For GPT-2 blocks (ffn 4h, multi-head) it is 72 B s L h^2 (1 + s/6h + V/12Lh).
    MoE blocks count their *active* weights per token: the router (E h) and the top_k routed
    plus shared SwiGLU experts (3 h f each) and the shared experts' gate (h), as MFU on active
    parameters is defined."""
    s, h, layers = cfg.seq_len, cfg.hidden, cfg.layers
    kv = 2 * cfg.kv * (h // cfg.heads)
    ffn_in = cfg.ffn * (2 if cfg.mlp == "swiglu" else 1)
    dense_ffn = h * ffn_in + cfg.ffn * h
    ffn_weights = sum(active_ffn_weights(cfg, i, dense_ffn) for i in range(layers))
    attention_weights = h * (h + kv) + h * h
    per_token = (layers * (2 * attention_weights + 4 * s * h) + 2 * ffn_weights
                 + 2 * h * vocab_size)
    return 3.0 * global_batch * s * per_token


def active_ffn_weights(cfg: ModelConfig, index: int, dense: int) -> int:
    """Weights one token multiplies by in block `index`'s FFN."""
    moe = cfg.moe
    if moe is None or not moe.is_moe_layer(index):
        return dense
    gate = cfg.hidden if moe.shared_expert_gate else 0
    return (moe.experts * cfg.hidden + (moe.top_k + moe.shared_experts) * 3 * cfg.hidden * moe.ffn
            + gate)


def step_record(*, step: int, loss: float, lr: float, grad_norm: float, consumed_samples: int,
                global_batch: int, seconds: float, model: ModelConfig, vocab_size: int,
                world_size: int, peak_tflops: float | None, comm_seconds: float) -> dict:
    """The metrics.jsonl object of one step; TFLOP/s are per device, MFU against the peak."""
    tflops = flops_per_step(model, vocab_size, global_batch) / seconds / world_size / 1e12
    return {
        "step": step,
        "loss": loss,
        "lr": lr,
        "grad_norm": grad_norm,
        "consumed_samples": consumed_samples,
        "global_batch": global_batch,
        "step_s": seconds,
        "tokens_per_s": global_batch * model.seq_len / seconds,
        "tflops": tflops,
        "mfu": tflops / peak_tflops if peak_tflops else None,
        "comm_share": comm_seconds / seconds,
    }


class MetricsWriter:
    """Appends records to metrics.jsonl and TensorBoard; a no-op on every rank but rank 0.
    `header` (e.g. the data blend) joins the first record written and is TensorBoard text."""

    def __init__(self, run_dir: str | Path, enabled: bool, header: dict | None = None):
        self.enabled, self.header = enabled, header
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = (run_dir / "metrics.jsonl").open("a")
        self.board = SummaryWriter(str(run_dir / "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        if self.header:
            record = {**record, **self.header}
            self.board.add_text("run/header", "\n\n".join(
                f"**{key}**: `{json.dumps(value)}`" for key, value in self.header.items()),
                record["step"])
            self.header = None
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                self.board.add_scalar(f"train/{key}", value, step)
        print(format_record(record), flush=True)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.board.close()


def format_record(record: dict) -> str:
    parts = [f"step {record['step']}", f"loss {record['loss']:.4f}"]
    if "val_loss" in record:
        parts.append(f"val_loss {record['val_loss']:.4f} ppl {record['val_ppl']:.2f}")
    parts += [f"lr {record['lr']:.3e}", f"grad_norm {record['grad_norm']:.3f}",
              f"{record['tokens_per_s']:.0f} tok/s", f"{record['tflops']:.3f} TFLOP/s"]
    if record.get("mfu") is not None:
        parts.append(f"MFU {100 * record['mfu']:.1f}%")
    return " | ".join(parts)
