"""Where the trainer's batches come from, and the one place they become model inputs.

The loop asks for this DP rank's slice of the global batch that starts at `consumed_samples`;
a source answers with token rows of seq_len + 1 (inputs are [:-1], targets [1:]). Because the
answer depends only on (consumed_samples, size, rank), any layout and any resume point see the
same samples, which the equivalence tests and exact resume rely on.

`prepare_micro_batches` turns those rows into what the model takes, for the loop and the
pipeline alike: inputs, targets and, when a packed sample's documents are kept apart
(Megatron's --reset-position-ids, --reset-attention-mask, --eod-mask-loss as
`data.reset_position_ids`, `data.reset_attention_mask`, `data.eod_mask_loss`), the position
ids, attention mask and loss mask that follow its EOD tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from training.config import DataConfig, TrainingConfig


class BatchSource(Protocol):
    vocab_size: int
    eod_id: int | None  # the token that ends each document; None when samples have none

    def local_batch(self, consumed_samples: int, global_batch: int, dp_rank: int,
                    dp_size: int) -> torch.Tensor:
        """LongTensor [global_batch / dp_size, seq_len + 1]: rank `dp_rank`'s contiguous part
        of the global batch of samples consumed_samples .. consumed_samples + global_batch."""
        ...


def local_indices(consumed_samples: int, global_batch: int, dp_rank: int, dp_size: int):
    """Sample indices of one DP rank, contiguous like Megatron's pretraining sampler."""
    per_rank = global_batch // dp_size
    return consumed_samples + dp_rank * per_rank + np.arange(per_rank, dtype=np.uint64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash: the same random numbers for a sample index on every rank."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class SyntheticBatchSource:
    """Seeded, learnable token rows: sample i is an arithmetic sequence modulo the vocabulary
    with a start and a stride drawn from (seed, split, i). A model must learn the rule from
    context, so the loss falls, which makes a training run a meaningful check."""

    def __init__(self, vocab_size: int, seq_len: int, seed: int, split: int = 0):
        self.vocab_size, self.seq_len, self.eod_id = vocab_size, seq_len, None
        self.salt = np.uint64((seed * 1_000_003 + split * 7919) % 2**63)

    def local_batch(self, consumed_samples, global_batch, dp_rank, dp_size):
        index = local_indices(consumed_samples, global_batch, dp_rank, dp_size)
        with np.errstate(over="ignore"):
            key = _splitmix64(index * np.uint64(2) + self.salt)
            start = key % np.uint64(self.vocab_size)
            stride = np.uint64(1) + _splitmix64(key) % np.uint64(7)
        positions = np.arange(self.seq_len + 1, dtype=np.uint64)
        tokens = (start[:, None] + stride[:, None] * positions) % np.uint64(self.vocab_size)
        return torch.from_numpy(tokens.astype(np.int64))


class DatasetBatchSource:
    """Adapts an indexable dataset (dataset[i] -> int64 array of seq_len + 1 tokens, with
    `vocab_size`), such as training.data's BlendedDataset."""

    def __init__(self, dataset):
        self.dataset, self.vocab_size = dataset, dataset.vocab_size
        self.eod_id = dataset.eod_id

    @property
    def blend(self) -> dict:
        """What the run trains on, for the first metrics record: each source's share, and the
        sources of the blend skipped for having no tokens."""
        return {"blend": dict(self.dataset.weights),
                "skipped_sources": list(self.dataset.skipped_sources)}

    def local_batch(self, consumed_samples, global_batch, dp_rank, dp_size):
        index = local_indices(consumed_samples, global_batch, dp_rank, dp_size) % len(self.dataset)
        return torch.from_numpy(np.stack([self.dataset[int(i)] for i in index]).astype(np.int64))


@dataclass
class DocumentMasks:
    """What keeps the documents of a packed sample apart (each None when not asked for):
    positions restarting after every EOD [batch, seq]; a block-diagonal causal attention mask
    [batch, 1, seq, seq], True where a query may attend, and the same as each token's document
    number [batch, seq] (what context parallelism's ring attention takes instead); a loss mask
    [batch, seq], 0 where the input token is EOD (its target is the next document's first
    token), and `loss_tokens`, the loss's denominator when it is not the loss mask's sum (a CP
    rank's slice: see parallel/context.py)."""

    position_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    loss_mask: torch.Tensor | None
    document_ids: torch.Tensor | None = None
    loss_tokens: torch.Tensor | None = None


@dataclass
class MicroBatch:
    inputs: torch.Tensor  # [micro, seq] token ids
    targets: torch.Tensor  # [micro, seq] the next tokens
    documents: DocumentMasks | None = None


def document_masks(inputs: torch.Tensor, eod_id: int, data: DataConfig,
                   dense_mask: bool = True) -> DocumentMasks:
    """Megatron's get_ltor_masks_and_position_ids, vectorised over the batch: a token's
    document is the number of EODs before it, its position the distance from the token after
    the last of them. `dense_mask=False` leaves out the [seq, seq] mask (document ids only)."""
    is_eod = inputs == eod_id
    seq = inputs.shape[1]
    index = torch.arange(seq, device=inputs.device).expand_as(inputs)
    position_ids = attention_mask = loss_mask = document = None
    if data.reset_position_ids:
        after_eod = torch.where(is_eod, index + 1, torch.zeros_like(index))
        start = torch.cummax(after_eod, dim=1).values
        start = torch.cat([torch.zeros_like(start[:, :1]), start[:, :-1]], dim=1)
        position_ids = index - start
    if data.reset_attention_mask:
        document = torch.cumsum(is_eod, dim=1) - is_eod.long()
    if data.reset_attention_mask and dense_mask:
        causal = torch.ones(seq, seq, dtype=torch.bool, device=inputs.device).tril()
        attention_mask = ((document[:, :, None] == document[:, None, :]) & causal).unsqueeze(1)
    if data.eod_mask_loss:
        loss_mask = (~is_eod).float()
    return DocumentMasks(position_ids, attention_mask, loss_mask, document)


def prepare_micro_batches(rows: torch.Tensor, micro: int, data: DataConfig,
                          eod_id: int | None, dense_mask: bool = True) -> list[MicroBatch]:
    """Rows [n, seq + 1] of token ids -> the micro-batches the model takes, masks included
    (the [seq, seq] attention mask only with `dense_mask`: ring attention takes document ids)."""
    keep_apart = data.reset_position_ids or data.reset_attention_mask or data.eod_mask_loss
    batches = []
    for part in rows.split(micro):
        inputs, targets = part[:, :-1], part[:, 1:]
        documents = document_masks(inputs, eod_id, data, dense_mask) if keep_apart else None
        batches.append(MicroBatch(inputs, targets, documents))
    return batches


def build_batch_sources(cfg: TrainingConfig, rank: int = 0) -> tuple[BatchSource, BatchSource]:
    """(train, validation) sources for a config: synthetic, or the blended curated corpus.

    With curated data, global rank 0 builds the blend's indices (cached on disk under a hash
    of their inputs) and the other ranks wait for them and load them.
    """
    seq_len = cfg.model.seq_len
    if cfg.data.is_synthetic:
        return (SyntheticBatchSource(cfg.model.vocab_size, seq_len, cfg.train.seed, split=0),
                SyntheticBatchSource(cfg.model.vocab_size, seq_len, cfg.train.seed, split=1))
    from training.data import build_blended_dataset  # the loader of the data issue

    # Validation reads the same first eval_iters global batches each time, so the curve of
    # validation loss compares like with like.
    samples = {"train": cfg.train.steps * cfg.batch.global_batch,
               "valid": cfg.train.eval_iters * cfg.batch.global_batch}
    # The tokenizer's vocabulary (from the token manifests) sizes the model; model.vocab_size
    # is the vocabulary of synthetic data only.
    datasets = build_blended_dataset(cfg.data.curated, seq_len, cfg.train.seed, samples,
                                     rank=rank, empty_sources=cfg.data.empty_sources)
    return DatasetBatchSource(datasets["train"]), DatasetBatchSource(datasets["valid"])


def check_data_sources(cfg: TrainingConfig) -> None:
    """Before any process starts: a blend whose sources have no tokens (every one, or any
    with `data.empty_sources: error`) is an EmptySourceError naming them."""
    if cfg.data.is_synthetic or not (Path(cfg.data.curated) / "spec.yaml").is_file():
        return  # synthetic, or not a curate OUT: the loader says what is missing
    from training.data.dataset import blend_from_spec
    from training.data.empty_sources import drop_empty_sources

    try:
        weights, epochs = blend_from_spec(Path(cfg.data.curated))
    except (ValueError, OSError, AttributeError, TypeError):
        return  # a spec the loader cannot read: it reports that itself, naming the file
    blend = {name: value for name, value in (weights or epochs).items() if value > 0}
    if blend:
        drop_empty_sources(blend, Path(cfg.data.curated) / "tokens", cfg.data.empty_sources)
