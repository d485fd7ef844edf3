"""What the export tests share: train a tiny run to a checkpoint and export it, our logits
computed block by block, and greedy generation compared token for token."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from training.checkpoint import save_checkpoint
from training.cli import main
from training.config import TrainingConfig
from training.parallel.grid import destroy_grid
from training.trainer import Trainer


def train_checkpoint(cfg_dict: dict, sources=None):
    """Train `cfg_dict` (which saves) to the end in this process; returns the eval model."""
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict), sources=sources)
    trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    return trainer.model.eval()


def train_and_export(cfg_dict: dict, out: Path, sources=None):
    """Train, checkpoint and `pretrain export-hf` the run into `out`; returns the model."""
    model = train_checkpoint(cfg_dict, sources)
    assert main(["export-hf", cfg_dict["train"]["dir"], str(out)]) == 0
    return model


def our_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    hidden = model.embedding(tokens)
    for block in model.blocks.values():
        hidden = block(hidden)
    return F.linear(model.head.ln(hidden), model.output_layer().weight)


def assert_same_greedy_tokens(hf, model, prompt: torch.Tensor, length: int, pad_id: int):
    new = length - prompt.shape[1]
    ours = prompt
    for _ in range(new):
        ours = torch.cat([ours, our_logits(model, ours)[:, -1:].argmax(-1)], dim=1)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = pad_id
    theirs = hf.generate(prompt, max_new_tokens=new, do_sample=False, attention_mask=None)
    assert theirs.tolist() == ours.tolist()
