"""Document embeddings from a textmill checkpoint: mean-pooled final hidden states.

Used by the curation `select` stage (`embedding: {checkpoint: PATH}`) to place candidate and
target documents in the space of the model that will be warmed up. The model is built on a
one-rank grid (no process group: every group is SOLO) from the checkpoint's own config, its
parameters read as global tensors whatever layout wrote them, and texts are encoded with the
tokenizer of the run's curated OUT (or the one given). The hidden state after the final norm
is averaged over each text's tokens (the first `model.seq_len`); texts are batched by length
and right-padded, which a causal model's earlier positions never see.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from training.checkpoint_format import CheckpointError, ShardReader, read_index
from training.config import TrainingConfig


class CheckpointEncoder:
    """A checkpoint's GPT in eval mode, on CPU, with its tokenizer."""

    def __init__(self, checkpoint: str | Path, tokenizer: str | Path | None = None,
                 batch_size: int = 32):
        from tokenizers import Tokenizer

        from training.init_from import resolve
        from training.model import GPT
        from training.parallel.grid import GridLayout, ProcessGrid

        ckpt = resolve(checkpoint)
        index = read_index(ckpt)
        config = TrainingConfig.model_validate(index["config"])
        self.cfg, self.batch_size = config.model, batch_size
        self.tokenizer = Tokenizer.from_file(str(tokenizer or _run_tokenizer(ckpt, config)))
        grid = ProcessGrid(GridLayout(1, 1, 1), 0, torch.device("cpu"))
        self.model = GPT(self.cfg, index["vocab_size"], grid, config.train.seed).eval()
        reader = ShardReader(ckpt, index)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(reader.read_full(f"model/{name}"))
        if self.tokenizer.get_vocab_size(with_added_tokens=True) > index["vocab_size"]:
            raise CheckpointError(f"{ckpt}: the tokenizer has more tokens than the model's "
                                  f"vocabulary ({index['vocab_size']}): not the run's tokenizer")

    @property
    def dims(self) -> int:
        return self.cfg.hidden

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), hidden) float32: the mean final hidden state of each text's tokens
        (zeros for a text without tokens)."""
        ids = [e.ids[: self.cfg.seq_len] for e in self.tokenizer.encode_batch(list(texts))]
        out = np.zeros((len(ids), self.cfg.hidden), dtype=np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")
        for start in range(0, len(order), self.batch_size):
            batch = [i for i in order[start:start + self.batch_size] if ids[i]]
            if not batch:
                continue
            longest = max(len(ids[i]) for i in batch)
            tokens = torch.zeros((len(batch), longest), dtype=torch.long)
            mask = torch.zeros((len(batch), longest, 1))
            for row, i in enumerate(batch):
                tokens[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1.0
            out[batch] = (self.final_hidden(tokens) * mask).sum(1).div(mask.sum(1)).numpy()
        return out

    def final_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden]: the output of the final norm, before the logits."""
        x = self.model.embedding(tokens)
        for block in self.model.blocks.values():
            x = block(x)
        return self.model.head.ln(x)


def _run_tokenizer(ckpt: Path, config: TrainingConfig) -> Path:
    from training.export_hf import find_tokenizer

    try:
        path = find_tokenizer(config)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{ckpt}: {exc}") from None
    if path is None:
        raise CheckpointError(f"{ckpt}: trained on synthetic data, so it has no tokenizer; "
                              "give embedding.tokenizer: PATH")
    return path
