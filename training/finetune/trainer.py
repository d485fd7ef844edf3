"""The fine-tuning trainer: the pretraining Trainer (same layouts, schedules, ZeRO, logging,
checkpoints) with three differences. Its model is the base checkpoint's weights, frozen, with
LoRA adapters on the targeted linears (or, with `finetune.lora: null`, every weight trained);
its batches are the task set's padded examples with their loss masks; and with
`finetune.ggpo` each step runs at GGPO's perturbed weights (ggpo.py).

Only trained parameters have gradient buckets and optimizer state, and only they are written
to checkpoints (so a LoRA checkpoint holds the adapters and their Adam moments, nothing of
the base), with GGPO's state (its last gradient norms); a resume reads the base from
`finetune.init_from` again.
"""

from __future__ import annotations

import torch

from training.batches import DocumentMasks, MicroBatch
from training.checkpoint_format import ShardReader, read_index
from training.config import TrainingConfig
from training.finetune.data import (
    TaskBatchSource,
    encode,
    load_tokenizer,
    read_examples,
    split,
)
from training.finetune.ggpo import GGPO
from training.finetune.lora import attach_lora
from training.finetune.setup import base_checkpoint, task_tokenizer
from training.model import GPT
from training.parallel.placement import global_box, placement
from training.trainer import Trainer, run_trainer


def task_sources(cfg: TrainingConfig, vocab_size: int) -> tuple[TaskBatchSource,
                                                                 TaskBatchSource]:
    """(train, held-out) sources of the task set; held-out is the train set when empty."""
    ft = cfg.finetune
    tokenizer, eod = load_tokenizer(task_tokenizer(cfg))
    task = encode(read_examples(ft.data), tokenizer, eod, cfg.model.seq_len)
    train_ids, held_ids = split(len(task.tokens), ft.eval_fraction, cfg.train.seed)
    seed = cfg.train.seed
    train = TaskBatchSource(task, train_ids, vocab_size, eod, seed, shuffle=True)
    held = TaskBatchSource(task, held_ids if len(held_ids) else train_ids, vocab_size, eod,
                           seed, shuffle=False)
    return train, held


class FinetuneTrainer(Trainer):
    def __init__(self, cfg: TrainingConfig,
                 sources: tuple[TaskBatchSource, TaskBatchSource] | None = None):
        self.base = base_checkpoint(cfg.finetune.init_from)
        self.base_index = read_index(self.base)
        self.adapted = {}
        sources = sources or task_sources(cfg, self.base_index["data_vocab_size"])
        super().__init__(cfg, sources)

    def _build_model(self) -> GPT:
        model = super()._build_model()
        self._load_base(model)
        lora = self.cfg.finetune.lora
        if lora is not None:
            self.adapted = attach_lora(model, lora, self.grid, self.cfg.train.seed)
        ggpo = self.cfg.finetune.ggpo  # built here: a resume (in Trainer.__init__) loads it
        self.ggpo = GGPO(self.adapted, ggpo, self.cfg.train.seed) if ggpo else None
        return model

    @torch.no_grad()
    def _load_base(self, model: GPT) -> None:
        """Every parameter of this rank from the base checkpoint (any layout)."""
        reader = ShardReader(self.base, self.base_index)
        for name, param in model.named_parameters():
            stored = placement(param).stored_as or name
            _, offset = global_box(param, self.grid)
            param.data.copy_(reader.read_box(f"model/{stored}", offset, param.shape))

    def _micro_batches(self, source, consumed: int, global_batch: int):
        args = (consumed, global_batch, self.grid.dp_rank, self.cfg.parallel.dp)
        rows = source.local_batch(*args).to(self.grid.device)
        masks = source.local_loss_mask(*args).to(self.grid.device)
        micro = self.cfg.batch.micro
        return [MicroBatch(part[:, :-1], part[:, 1:], DocumentMasks(None, None, mask))
                for part, mask in zip(rows.split(micro), masks.split(micro), strict=True)]

    def train_step(self):
        if self.ggpo is not None:
            self.ggpo.begin_step(self.step + 1)
        return super().train_step()

    def on_gradients_reduced(self) -> None:
        if self.ggpo is not None:
            self.ggpo.observe_gradients(self.buckets)

    def checkpoint_extras(self):
        if self.ggpo is None:
            return []
        first = self.grid.dp_cp_rank == 0  # the DP x CP replicas hold the same norms
        return self.ggpo.checkpoint_pieces(writes_replicated=first and self.grid.tp_rank == 0,
                                           writes_own=first)

    def load_extras(self, reader) -> None:
        if self.ggpo is not None:
            self.ggpo.load(reader)


def run_finetune_worker(cfg_dict: dict) -> list[dict]:
    """Entry point of one launched fine-tuning process."""
    return run_trainer(FinetuneTrainer, cfg_dict)
