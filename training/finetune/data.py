"""The task set of `pretrain finetune`: JSONL examples -> padded token rows and loss masks.

Each example is one sample, *padded* (not packed): prompt tokens, completion tokens, the EOD
token, then padding (EOD ids) to seq_len + 1. An example longer than that loses the start of
its prompt (the completion, what the loss is on, is kept), or if the completion alone is too
long, the end of the completion (both counted and reported). The loss mask is 1 where the
target is a completion token (or, with `text_field`, any token of the text) or the closing
EOD, 0 on the prompt and the padding, so with prompt/completion the loss is on the completion
only. The model attends causally, so the padding after an example never changes what it sees.

Examples are split once, by a permutation seeded with train.seed, into `eval_fraction` held
out and the rest for training; every epoch visits the training examples in a fresh seeded
order. A batch depends only on (consumed samples, size, DP rank), as the pretraining sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curation.jsonl import read_jsonl
from curation.tokenize import EOD_TOKEN
from training.batches import local_indices
from training.finetune.config import TaskDataConfig


class TaskDataError(ValueError):
    """An unreadable task set; the message names the file, the line and the field."""


@dataclass
class TaskSet:
    tokens: np.ndarray  # int64 [examples, seq_len + 1]
    loss_mask: np.ndarray  # float32 [examples, seq_len]: 1 where the target counts
    truncated: int  # examples cut to fit seq_len + 1


def read_examples(cfg: TaskDataConfig) -> list[tuple[str, str]]:
    """(prompt, completion) per line ("" prompt with text_field), naming the place of any
    bad line."""
    fields = ([cfg.text_field] if cfg.text_field else [cfg.prompt_field, cfg.completion_field])
    examples = []
    for path in map(Path, cfg.paths):
        if not path.is_file():
            raise TaskDataError(f"finetune.data.paths: {path}: no such file")
        for number, row in read_jsonl(path, TaskDataError, where="{path}:{line}"):
            for field in fields:
                if not isinstance(row.get(field), str):
                    problem = "is missing" if field not in row else "is not a string"
                    raise TaskDataError(f"{path}:{number}: field {field!r} {problem}")
            examples.append(("", row[cfg.text_field]) if cfg.text_field
                            else (row[cfg.prompt_field], row[cfg.completion_field]))
    if not examples:
        raise TaskDataError(f"finetune.data.paths: {', '.join(cfg.paths)}: no examples")
    return examples


def load_tokenizer(path: str | Path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))
    eod = tokenizer.token_to_id(EOD_TOKEN)
    if eod is None:
        raise TaskDataError(f"{path}: the tokenizer has no {EOD_TOKEN} token")
    return tokenizer, eod


def encode(examples: list[tuple[str, str]], tokenizer, eod: int, seq_len: int) -> TaskSet:
    prompts = tokenizer.encode_batch([p for p, _ in examples]) if any(p for p, _ in examples) \
        else None
    completions = tokenizer.encode_batch([c for _, c in examples])
    tokens = np.full((len(examples), seq_len + 1), eod, dtype=np.int64)
    counted = np.zeros((len(examples), seq_len + 1), dtype=np.float32)  # per token
    truncated = 0
    for i, completion in enumerate(completions):
        prompt = prompts[i].ids if prompts is not None else []
        answer = completion.ids + [eod]
        truncated += len(prompt) + len(answer) > seq_len + 1
        prompt = prompt[max(0, len(prompt) + len(answer) - seq_len - 1):]
        ids = (prompt + answer)[: seq_len + 1]
        tokens[i, : len(ids)] = ids
        counted[i, len(prompt): len(ids)] = 1.0
    # the target of position j is token j + 1
    return TaskSet(tokens, counted[:, 1:].copy(), truncated)


def split(n: int, eval_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) example indices."""
    order = np.random.default_rng(seed).permutation(n)
    held = math.ceil(n * eval_fraction) if eval_fraction > 0 else 0
    if held >= n:
        raise TaskDataError(f"finetune.eval_fraction ({eval_fraction}) leaves no training "
                            f"example of {n}")
    return np.sort(order[held:]), np.sort(order[:held])


class TaskBatchSource:
    """Rows of a subset of the task set; sample k is example order[k mod n] of epoch k // n,
    each epoch in its own seeded order (`shuffle`), or the subset in order."""

    def __init__(self, task: TaskSet, indices: np.ndarray, vocab_size: int, eod: int,
                 seed: int, shuffle: bool):
        self.tokens, self.mask = task.tokens[indices], task.loss_mask[indices]
        self.vocab_size, self.eod_id = vocab_size, eod
        self.seed, self.shuffle = seed, shuffle
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.tokens)

    def _examples(self, samples: np.ndarray) -> np.ndarray:
        n = len(self.tokens)
        epochs, within = np.divmod(samples.astype(np.int64), n)
        if not self.shuffle:
            return within
        picked = np.empty_like(within)
        for epoch in np.unique(epochs):
            if epoch not in self._orders:
                rng = np.random.default_rng([self.seed, int(epoch)])
                self._orders[int(epoch)] = rng.permutation(n)
            here = epochs == epoch
            picked[here] = self._orders[int(epoch)][within[here]]
        return picked

    def local_batch(self, consumed_samples, global_batch, dp_rank, dp_size) -> torch.Tensor:
        rows = self._examples(local_indices(consumed_samples, global_batch, dp_rank, dp_size))
        return torch.from_numpy(self.tokens[rows])

    def local_loss_mask(self, consumed_samples, global_batch, dp_rank, dp_size):
        rows = self._examples(local_indices(consumed_samples, global_batch, dp_rank, dp_size))
        return torch.from_numpy(self.mask[rows])
