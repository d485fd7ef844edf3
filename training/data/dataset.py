"""The trainer's entry point: a curated OUT folder -> blended train/valid/test datasets.

Sources are mixed by weight (normalised) or by epochs, from arguments or from the frozen
`OUT/spec.yaml` (its `sources[].weight` / `sources[].epochs`). Splits follow Megatron:
"98,1,1" cuts every source's documents into contiguous train/valid/test ranges. Every index
(document, sample, shuffle per source; the blend) is built by rank 0 and cached on disk under
a hash of its inputs, then memory-mapped by all ranks (training/data/cache.py).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import yaml

from training.data.blend import blend_indices, normalise_weights
from training.data.cache import cached_indices
from training.data.empty_sources import announce_skipped, drop_empty_sources
from training.data.gpt_dataset import GPTDataset, build_sample_indices, samples_per_epoch
from training.data.remote_cache import local_curated
from training.data.shards import MANIFEST_NAME, ShardError, SourceShards

SPLITS = ("train", "valid", "test")
SAMPLE_INDICES = ("doc_idx", "sample_idx", "shuffle_idx")
INDEX_VERSION = 2  # 2: prefix-stable indices (shuffle blocks, epochs seeded alone)


class BlendedDataset:
    """`dataset[i]`: the i-th sample of the blend, an int64 array of seq_len + 1 tokens."""

    def __init__(self, split: str, sources: list[str], datasets: dict[str, GPTDataset],
                 blend_source: np.ndarray, blend_sample: np.ndarray, seq_len: int,
                 vocab_size: int, eod_id: int, weights: dict[str, float] | None = None,
                 skipped_sources: tuple[str, ...] = ()):
        self.split = split
        self.weights = weights or {}  # each source's share of this split's samples
        self.skipped_sources = list(skipped_sources)  # in the blend, but without tokens
        self.sources = sources
        self._datasets = [datasets.get(name) for name in sources]
        self.blend_source = blend_source
        self.blend_sample = blend_sample
        self.seq_len = seq_len
        self.vocab_size = vocab_size
        self.eod_id = eod_id

    def __len__(self) -> int:
        return len(self.blend_source)

    def __getitem__(self, i: int) -> np.ndarray:
        return self._datasets[self.blend_source[i]][int(self.blend_sample[i])]

    def batch(self, indices) -> np.ndarray:
        """Samples `indices` stacked into a (len(indices), seq_len + 1) int64 array."""
        return np.stack([self[int(i)] for i in indices])


def parse_split(split: str) -> np.ndarray:
    """'98,1,1' -> train/valid/test fractions (missing parts are 0)."""
    try:
        parts = [float(p) for p in split.split(",")]
    except ValueError as err:
        raise ValueError(f"split {split!r}: expected up to 3 comma-separated numbers") from err
    if not 1 <= len(parts) <= 3 or min(parts) < 0 or sum(parts) <= 0:
        raise ValueError(f"split {split!r}: expected up to 3 non-negative numbers, sum > 0")
    parts += [0.0] * (3 - len(parts))
    return np.asarray(parts) / sum(parts)


def split_ranges(num_documents: int, fractions: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous document ranges per split; a split with a positive fraction gets at least
    one document when there are enough (small corpora still get a validation split)."""
    bounds = np.rint(np.concatenate([[0.0], np.cumsum(fractions)]) * num_documents).astype(int)
    bounds[-1] = num_documents
    sizes = np.diff(bounds)
    for split in np.flatnonzero((fractions > 0) & (sizes == 0)):
        donor = int(np.argmax(sizes))
        if sizes[donor] > 1:
            sizes[donor] -= 1
            sizes[split] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def blend_from_spec(curated_out: Path) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """(weights, epochs) of the frozen spec; sources that give neither read as 1 epoch each."""
    path = Path(curated_out) / "spec.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no frozen spec; pass weights= or epochs= instead")
    sources = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("sources") or []
    weights = {s["name"]: s["weight"] for s in sources if s.get("weight") is not None}
    epochs = {s["name"]: s["epochs"] for s in sources if s.get("epochs") is not None}
    unset = [s["name"] for s in sources if s["name"] not in weights and s["name"] not in epochs]
    if weights and (epochs or unset):
        raise ValueError(f"{path}: sources {sorted(set(epochs) | set(unset))} give no `weight` "
                         "while others do; give every source a weight, or use epochs")
    if not weights:
        epochs.update({name: 1.0 for name in unset})
    return (weights, None) if weights else (None, epochs)


def _open_sources(tokens_dir: Path, names: list[str], model_vocab_size: int | None):
    shards = {}
    for name in names:
        source_dir = tokens_dir / name
        if not (source_dir / MANIFEST_NAME).is_file():
            raise ShardError(f"{source_dir / MANIFEST_NAME}: source {name!r} has no token shards")
        shards[name] = SourceShards(source_dir)
    first = shards[names[0]]
    for source in shards.values():
        where = source.dir / MANIFEST_NAME
        if model_vocab_size is not None and source.vocab_size > model_vocab_size:
            raise ShardError(f"{where}: vocabulary of {source.vocab_size} tokens is larger than "
                             f"the model's {model_vocab_size}")
        if source.manifest.get("tokenizer") != first.manifest.get("tokenizer") or \
                source.eod_id != first.eod_id:
            raise ShardError(f"{where}: tokenizer differs from {first.dir / MANIFEST_NAME}")
    return shards


def _split_plan(shards, ranges, seq_len, weights, epochs, requested):
    """(weights, total samples) of one split, in source order.

    With epochs, a source's weight is epochs x its tokens in the split, and the default
    total is what those epochs yield in whole samples.
    """
    names = list(shards)
    if weights is not None:
        return np.array([weights[n] for n in names]), requested
    tokens = np.array([shards[n].document_lengths()[slice(*ranges[n])].sum() for n in names])
    split_weights = np.array([epochs[n] for n in names]) * tokens
    if split_weights.sum() <= 0:
        return None, 0
    if requested is None:
        requested = int(sum(np.floor(epochs[n] * samples_per_epoch(int(t), seq_len))
                            for n, t in zip(names, tokens, strict=True)))
    return split_weights / split_weights.sum(), requested


def _build_split(shards, ranges, seq_len, seed, split_number, weights, total, verified: set,
                 previous: dict[str, np.ndarray] | None):
    """All indices of one split (runs on rank 0 only, on a cache miss), extending `previous`
    (the cached indices of fewer samples) where there are any: the blend is recomputed (it is
    prefix-stable and cheap), each source's indices are extended."""
    names = list(shards)
    for name in names:  # a full read of each shard, once per build
        if name not in verified:
            SourceShards(shards[name].dir, verify_sha=True)
            verified.add(name)
    blend_source, blend_sample = blend_indices(weights, total)
    counts = np.bincount(blend_source, minlength=len(names))
    arrays = {"blend_source": blend_source, "blend_sample": blend_sample}
    for k, name in enumerate(names):
        if counts[k] == 0:
            continue
        low, high = ranges[name]
        if high <= low:
            raise ShardError(f"{shards[name].dir / MANIFEST_NAME}: no documents in split "
                             f"{SPLITS[split_number]!r} for {counts[k]} samples")
        before = None
        if previous is not None and f"{name}.doc_idx" in previous:
            before = {key: previous[f"{name}.{key}"] for key in SAMPLE_INDICES}
        indices = build_sample_indices(np.arange(low, high), shards[name].document_lengths(),
                                       seq_len, int(counts[k]),
                                       [seed, split_number, zlib.crc32(name.encode())], before)
        arrays.update({f"{name}.{key}": value for key, value in indices.items()})
    return arrays


def build_blended_dataset(curated_out: Path, seq_len: int, seed: int,
                          num_samples: dict[str, int] | None = None,
                          weights: dict[str, float] | None = None,
                          epochs: dict[str, float] | None = None, split: str = "98,1,1",
                          cache_dir: Path | None = None, rank: int = 0,
                          model_vocab_size: int | None = None,
                          timeout_s: float = 3600.0,
                          empty_sources: str = "error") -> dict[str, BlendedDataset]:
    """The blended datasets of each split that has samples, keyed 'train'/'valid'/'test'.

    `num_samples` gives the samples per split (required with weights; with epochs it
    defaults to what the epochs yield). Without `weights` and `epochs` the blend is read from
    OUT/spec.yaml. Every rank calls this; rank 0 builds missing indices, others wait.
    A source without token shards is an error, or with `empty_sources="skip"` left out of the
    blend (rank 0 says so in one line; the datasets list it in `skipped_sources`).
    """
    curated_out = local_curated(curated_out)  # object storage: a verified local copy
    if weights is not None and epochs is not None:
        raise ValueError("give weights= or epochs=, not both")
    if weights is None and epochs is None:
        weights, epochs = blend_from_spec(curated_out)
    blend = normalise_weights(weights) if weights is not None else dict(epochs)
    names = [name for name, value in blend.items() if value > 0]
    if not names:
        raise ValueError("no source has a positive weight or epochs")
    blend, skipped = drop_empty_sources({n: blend[n] for n in names}, curated_out / "tokens",
                                        empty_sources)
    if weights is not None:
        blend = {name: value / sum(blend.values()) for name, value in blend.items()}
    names = list(blend)
    shards = _open_sources(curated_out / "tokens", names, model_vocab_size)
    fractions = parse_split(split)
    per_source_ranges = {n: split_ranges(shards[n].num_documents, fractions) for n in names}
    num_samples = num_samples or {}
    cache_dir = Path(cache_dir) if cache_dir is not None else curated_out / "index-cache"
    first = shards[names[0]]
    verified: set[str] = set()
    out = {}
    for number, split_name in enumerate(SPLITS):
        ranges = {n: per_source_ranges[n][number] for n in names}
        requested = num_samples.get(split_name)
        if weights is not None and not requested:
            continue
        split_weights, total = _split_plan(shards, ranges, seq_len,
                                           blend if weights is not None else None,
                                           blend if epochs is not None else None, requested)
        if not total:
            continue
        inputs = {"version": INDEX_VERSION, "split": split_name, "fractions": fractions.tolist(),
                  "ranges": ranges, "seq_len": seq_len, "seed": seed,
                  "weights": dict(zip(names, split_weights.tolist(), strict=True)),
                  "shards": {n: [s["sha256"] for s in shards[n].manifest["shards"]]
                             for n in names}}
        arrays = cached_indices(
            cache_dir, inputs,
            lambda previous, r=ranges, w=split_weights, t=total, k=number: _build_split(
                shards, r, seq_len, seed, k, w, int(t), verified, previous),
            rank=rank, timeout_s=timeout_s, size=int(total))
        datasets = {n: GPTDataset(shards[n], {key: arrays[f"{n}.{key}"] for key in
                                              SAMPLE_INDICES}, seq_len)
                    for n in names if f"{n}.doc_idx" in arrays}
        # an entry built for a longer run serves this one: its first `total` samples
        out[split_name] = BlendedDataset(split_name, names, datasets,
                                         arrays["blend_source"][:total],
                                         arrays["blend_sample"][:total], seq_len,
                                         first.vocab_size, first.eod_id,
                                         dict(zip(names, split_weights.tolist(), strict=True)),
                                         skipped)
    if skipped and rank == 0:
        announce_skipped(skipped, out["train"].weights if "train" in out else blend)
    return out
