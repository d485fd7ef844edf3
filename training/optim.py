"""Optimisation schedule and rules, as Megatron-LM: AdamW without decay on biases and norms,
linear warmup then cosine decay to `min_lr`, gradient clipping by the global norm, and the
batch-size ramp-up of GPT-3 / MT-NLG."""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import BatchConfig, OptimConfig


def decays(param: nn.Parameter) -> bool:
    """Weight decay applies to matrices (linears, embeddings), not to biases or norm gains."""
    return param.ndim >= 2


def learning_rate(position: int, cfg: OptimConfig, run_length: int) -> float:
    """LR at `position` (in `cfg.schedule_unit`, counted after the step's batch: step 1, or
    the samples or tokens consumed once the step is done): linear warmup to `lr` over
    `warmup`, then half a cosine down to `min_lr` at `decay` (default: `run_length`), then
    flat."""
    decay = cfg.decay or run_length
    if cfg.warmup and position <= cfg.warmup:
        return cfg.lr * position / cfg.warmup
    if position >= decay:
        return cfg.min_lr
    progress = (position - cfg.warmup) / max(1, decay - cfg.warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


class LRSchedule:
    """The LR of each step in the unit the config counts (Megatron's --lr-warmup-samples /
    --lr-decay-samples when `samples`; `tokens` is samples x seq_len). With batch ramp-up
    only samples or tokens say how much data a warmup covers, so the config requires them."""

    def __init__(self, optim: OptimConfig, batch: BatchConfig, steps: int, seq_len: int):
        self.optim = optim
        self.per_sample = seq_len if optim.schedule_unit == "tokens" else 1
        self.run_length = (steps if optim.schedule_unit == "steps"
                           else samples_after_steps(steps, batch) * self.per_sample)

    def position(self, step: int, consumed_samples: int) -> int:
        """Where step `step` (1-based) stands once it has consumed `consumed_samples`."""
        if self.optim.schedule_unit == "steps":
            return step
        return consumed_samples * self.per_sample

    def lr(self, step: int, consumed_samples: int) -> float:
        return learning_rate(self.position(step, consumed_samples), self.optim, self.run_length)


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


def samples_after_steps(steps: int, cfg: BatchConfig) -> int:
    """Samples `steps` steps consume, ramp-up included: one batch size at a time, so a
    530B run's 86k steps cost a few dozen iterations."""
    consumed = 0
    while steps > 0:
        size = global_batch_size(consumed, cfg)
        if size == cfg.global_batch:
            return consumed + steps * size
        start, increment, ramp_samples = cfg.rampup
        per_increment = ramp_samples / ((cfg.global_batch - start) // increment)
        next_size_at = math.floor(((size - start) // increment + 1) * per_increment)
        while global_batch_size(next_size_at, cfg) == size:  # float rounding at the boundary
            next_size_at += 1
        at_this_size = min(steps, max(1, -(-(next_size_at - consumed) // size)))
        consumed += at_this_size * size
        steps -= at_this_size
    return consumed


def clip_coefficient(grad_norm: float, clip: float) -> float:
    """Scale for the gradients so their global norm is at most `clip` (0 disables)."""
    if clip <= 0 or grad_norm <= clip:
        return 1.0
    return clip / (grad_norm + 1e-6)


def adamw_update(param, grad, exp_avg, exp_avg_sq, decay_mask, *, lr: float, step: int,
                 cfg: OptimConfig) -> None:
    """One decoupled-weight-decay Adam step, in place, on flat fp32 tensors (the same
    arithmetic as torch.optim.AdamW); `decay_mask` is 1.0 where weight decay applies."""
    if cfg.weight_decay:
        param.addcmul_(param, decay_mask, value=-lr * cfg.weight_decay)
    exp_avg.lerp_(grad, 1.0 - cfg.beta1)
    exp_avg_sq.mul_(cfg.beta2).addcmul_(grad, grad, value=1.0 - cfg.beta2)
    bias1 = 1.0 - cfg.beta1**step
    bias2 = 1.0 - cfg.beta2**step
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(cfg.eps)
    param.addcdiv_(exp_avg, denom, value=-lr / bias1)


def flat_mask(params: list[nn.Parameter], offsets: dict, numel: int, rule, device) -> torch.Tensor:
    """A float mask over a flat buffer: 1.0 on the elements of parameters where `rule` holds."""
    mask = torch.zeros(numel, dtype=torch.float32, device=device)
    for param in params:
        if rule(param):
            mask[offsets[param]: offsets[param] + param.numel()] = 1.0
    return mask
