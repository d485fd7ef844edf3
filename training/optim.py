"""Optimisation schedule and rules, as Megatron-LM: AdamW without decay on biases and norms,
linear warmup then cosine decay to `min_lr`, gradient clipping by the global norm, and the
batch-size ramp-up of GPT-3 / MT-NLG."""

from __future__ import annotations

import math

from torch import nn

from training.config import BatchConfig, OptimConfig


def decays(param: nn.Parameter) -> bool:
    """Weight decay applies to matrices (linears, embeddings), not to biases or norm gains."""
    return param.ndim >= 2


def learning_rate(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """LR for optimizer step `step` (1-based): linear warmup to `lr` over `warmup` steps, then
    half a cosine down to `min_lr` at `decay_steps` (default: the run's steps), then flat."""
    decay_steps = cfg.decay_steps or total_steps
    if cfg.warmup and step <= cfg.warmup:
        return cfg.lr * step / cfg.warmup
    if step >= decay_steps:
        return cfg.min_lr
    progress = (step - cfg.warmup) / max(1, decay_steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def global_batch_size(consumed_samples: int, cfg: BatchConfig) -> int:
    """Megatron's ramp-up: from `start`, grow by `increment` every `samples / increments`
    consumed samples until `global` (MT-NLG: 32 -> 1920 in steps of 32 over 12B tokens)."""
    if cfg.rampup is None:
        return cfg.global_batch
    start, increment, ramp_samples = cfg.rampup
    increments = (cfg.global_batch - start) // increment
    if increments == 0 or consumed_samples >= ramp_samples:
        return cfg.global_batch
    samples_per_increment = ramp_samples / increments
    return min(cfg.global_batch, start + int(consumed_samples // samples_per_increment) * increment)


def clip_coefficient(grad_norm: float, clip: float) -> float:
    """Scale for the gradients so their global norm is at most `clip` (0 disables)."""
    if clip <= 0 or grad_norm <= clip:
        return 1.0
    return clip / (grad_norm + 1e-6)


def adamw_update(param, grad, exp_avg, exp_avg_sq, decay: bool, *, lr: float, step: int,
                 cfg: OptimConfig) -> None:
    """One decoupled-weight-decay Adam step, in place, on flat fp32 tensors (the same
    arithmetic as torch.optim.AdamW); `decay` says whether weight decay applies to them."""
    if cfg.weight_decay and decay:
        param.mul_(1.0 - lr * cfg.weight_decay)
    exp_avg.lerp_(grad, 1.0 - cfg.beta1)
    exp_avg_sq.mul_(cfg.beta2).addcmul_(grad, grad, value=1.0 - cfg.beta2)
    bias1 = 1.0 - cfg.beta1**step
    bias2 = 1.0 - cfg.beta2**step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(cfg.eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias1)
