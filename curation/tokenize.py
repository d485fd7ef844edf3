"""The DAG's last step: curated documents -> a tokenizer -> token shards per source.

Everything that touches documents runs on the workers: the tokenizer is trained there on a
bottom-k sample of the curated documents (by seeded id hash), every curated partition is
encoded into one *part* file, and the shards are cut from the parts and written there too
(curation.shard_layout). The `curate` process receives per-partition token counts, the
shard plan and each shard's manifest entry. The shards depend only on the curated input and
the tokenizer, never on the number of workers, and a crashed run resumes: finished parts and
finished sources (manifest present, shard files of the recorded size) are not redone.
"""

from __future__ import annotations

import json
import os
import shutil
from itertools import chain
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from curation.aggregate import result, submit
from curation.atomic import atomic_path
from curation.batches import map_batched
from curation.bottom_k import bottom_k_rows
from curation.config import StrictModel
from curation.shard_layout import part_counts, part_windows, plan_shards, write_shard
from curation.shards import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    SHARD_PATTERN,
    file_sha256,
    token_dtype,
    tokens_table,
    write_ipc_atomic,
    write_manifest,
)
from curation.storage import out_path, read_parquet_table, remove_tree, resolved

EOD_TOKEN = "<|endoftext|>"
CURATED_GLOB = "part-*.parquet"


class TrainTokenizerConfig(StrictModel):
    """Train a byte-level BPE on (a deterministic sample of) the curated corpus."""

    vocab_size: int = Field(default=8192, gt=256)
    special_tokens: list[str] = [EOD_TOKEN]
    min_frequency: int = Field(default=2, ge=1)
    max_docs: int = Field(default=200_000, gt=0)  # bottom-k sample by seeded id hash


class TokenizerConfig(StrictModel):
    train: TrainTokenizerConfig | None = None
    path: str | None = None  # an existing tokenizer.json, relative to the spec's folder
    shard_tokens: int = Field(default=50_000_000, gt=0, lt=2**31)
    eod_token: str = EOD_TOKEN
    batch_docs: int = Field(default=1024, gt=0)  # documents per encode_batch call

    @model_validator(mode="after")
    def _one_source(self) -> TokenizerConfig:
        if (self.train is None) == (self.path is None):
            raise ValueError("give exactly one of `train` or `path`")
        return self


def curated_partitions(curated_dir: Path) -> dict[str, list[Path]]:
    """Curated parquet partitions per source, both in sorted order (the canonical order)."""
    curated_dir = out_path(curated_dir)
    sources = sorted(p for p in curated_dir.iterdir() if p.is_dir()) if curated_dir.is_dir() else []
    return {s.name: sorted(s.glob(CURATED_GLOB)) for s in sources}


def _train_on_sample(config: TrainTokenizerConfig, sample: list[list[tuple]]) -> str:
    """Worker task: a byte-level BPE trained on the sample's texts (in hash order), as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(config.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator((text for _, _, text in sample[0]), trainer)
    return tokenizer.to_str()


def _train(config: TrainTokenizerConfig, parts: list[Path], seed: int, client):
    """Sample and train on the cluster; only the trained tokenizer comes back."""
    from tokenizers import Tokenizer

    sample = bottom_k_rows(client, parts, None, seed, "tokenizer", config.max_docs, ["text"],
                           desc="tokenizer: training sample")
    return Tokenizer.from_str(result(client, submit(client, _train_on_sample, config, sample)))


def _check_eod(tokenizer, config: TokenizerConfig, where: str) -> None:
    if tokenizer.token_to_id(config.eod_token) is None:
        raise ValueError(f"{where}: the tokenizer has no end-of-document token "
                         f"{config.eod_token!r} (tokenizer.eod_token)")


def train_or_load_tokenizer(config: TokenizerConfig, curated_dir: Path, out_dir: Path,
                            spec_base_dir: Path, seed: int = 0, client=None):
    """Train or load the tokenizer, save it to OUT/tokenizer.json; return (tokenizer, sha256).

    Training runs on `client`'s workers (here when None) on a sample drawn with `seed`."""
    from tokenizers import Tokenizer

    final = out_path(out_dir) / "tokenizer.json"
    if config.path is not None:
        source = Path(spec_base_dir) / config.path
        if not source.is_file():
            raise FileNotFoundError(f"tokenizer.path: {source} does not exist")
        tokenizer = Tokenizer.from_file(str(source))
        _check_eod(tokenizer, config, where=str(source))
        with atomic_path(final) as tmp:
            shutil.copyfile(source, tmp)
    else:
        parts = [p for ps in curated_partitions(curated_dir).values() for p in ps]
        if not parts:
            raise ValueError(f"tokenizer.train: no curated partitions under {curated_dir}")
        tokenizer = _train(config.train, parts, seed, client)
        _check_eod(tokenizer, config, where="tokenizer.train.special_tokens")
        with atomic_path(final) as tmp:
            tmp.write_text(tokenizer.to_str(), encoding="utf-8")
    return tokenizer, file_sha256(final)


_WORKER_TOKENIZERS: dict[tuple[str, str], object] = {}


def _worker_tokenizer(path: str, sha: str):
    """Load the tokenizer once per worker process (keyed by its sha, so a new one reloads)."""
    from tokenizers import Tokenizer

    key = (path, sha)
    if key not in _WORKER_TOKENIZERS:
        _WORKER_TOKENIZERS.clear()
        _WORKER_TOKENIZERS[key] = Tokenizer.from_str(out_path(path).read_text("utf-8"))
    return _WORKER_TOKENIZERS[key]


def encode_documents(tokenizer, texts: list[str], eod_id: int, dtype: np.dtype,
                     batch_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat tokens, int32 offsets) of `texts`, EOD appended to every document."""
    eod = [eod_id]
    lengths = np.zeros(len(texts), dtype=np.int64)
    pieces = []
    for start in range(0, len(texts), batch_docs):
        encodings = tokenizer.encode_batch_fast(texts[start:start + batch_docs],
                                                add_special_tokens=False)
        ids = [e.ids for e in encodings]
        lengths[start:start + len(ids)] = [len(i) + 1 for i in ids]
        pieces.append(np.fromiter(chain.from_iterable(chain(i, eod) for i in ids), dtype=dtype,
                                  count=int(lengths[start:start + len(ids)].sum())))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("a curated partition holds >= 2**31 tokens; use smaller partitions")
    return flat, offsets.astype(np.int32)


def _encode_partition(curated: str, part_path: str, tokenizer_path: str, sha: str,
                      eod_id: int, dtype_name: str, batch_docs: int) -> tuple[int, int]:
    """Worker task: one curated partition -> one part file (kept when already there);
    returns its (documents, tokens)."""
    final = out_path(part_path)
    if not final.exists():
        table = read_parquet_table(curated, columns=["id", "text"])
        tokenizer = _worker_tokenizer(tokenizer_path, sha)
        flat, offsets = encode_documents(tokenizer, table.column("text").to_pylist(), eod_id,
                                         np.dtype(dtype_name), batch_docs)
        write_ipc_atomic(tokens_table(table.column("id").to_pylist(), flat, offsets), final)
    return part_counts(part_path)


def _encode_pair(pair: tuple[str, str], *args) -> tuple[int, int]:
    return _encode_partition(*pair, *args)


def _part_windows_at(start: tuple[str, int], shard_tokens: int) -> list:
    return part_windows(start[0], int(start[1]), shard_tokens)


def _write_planned_shard(shard: tuple[list, str, str]) -> dict:
    return write_shard(shard[0], shard[1])


def _source_is_done(source_dir: Path, params: dict) -> bool:
    manifest_path = source_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if {k: manifest.get(k) for k in params} != params:
        return False
    return all((source_dir / s["file"]).is_file()
               and (source_dir / s["file"]).stat().st_size == s["bytes"]
               for s in manifest["shards"])


def _remove_stale_shards(source_dir: Path, shards: list[dict]) -> None:
    keep = {s["file"] for s in shards}
    for stale in source_dir.glob("shard-*.arrow"):
        if stale.name not in keep:
            stale.unlink()


def tokenize_corpus(config: TokenizerConfig, curated_dir: Path, tokens_dir: Path,
                    tokenizer_path: Path, client) -> dict[str, Path]:
    """Encode every curated partition on the cluster; write shards + manifest per source."""
    from tokenizers import Tokenizer

    tokenizer_path = resolved(tokenizer_path)
    sha = file_sha256(tokenizer_path)
    tokenizer = Tokenizer.from_str(tokenizer_path.read_text("utf-8"))
    eod_id = tokenizer.token_to_id(config.eod_token)
    if eod_id is None:
        raise ValueError(f"{tokenizer_path}: no end-of-document token {config.eod_token!r}")
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab_size)
    manifest_dir = resolved(tokens_dir) / "source"  # the tokenizer path is relative to it
    params = {"format": MANIFEST_FORMAT,
              "tokenizer": {"path": os.path.relpath(str(tokenizer_path), str(manifest_dir)),
                            "sha256": sha},
              "vocab_size": vocab_size, "dtype": dtype.name, "eod_id": eod_id,
              "shard_tokens": config.shard_tokens}

    todo = {}
    for source, partitions in curated_partitions(curated_dir).items():
        source_dir = out_path(tokens_dir) / source
        if _source_is_done(source_dir, params):
            continue
        parts_dir = source_dir / f"_parts-{sha[:16]}"
        parts = [str(parts_dir / f"part-{i:05d}.arrow") for i in range(len(partitions))]
        todo[source] = (source_dir, parts_dir, [str(c) for c in partitions], parts)
    # One map per step over every source's partitions (few, large tasks: curation.batches).
    counts = iter(map_batched(
        client, _encode_pair, [pair for *_, curated, parts in todo.values()
                               for pair in zip(curated, parts, strict=True)],
        str(tokenizer_path), sha, eod_id, dtype.name, config.batch_docs, desc="tokenize"))
    starts = []
    for *_, parts in todo.values():
        tokens = np.array([next(counts)[1] for _ in parts], dtype=np.int64)
        starts += zip(parts, (np.cumsum(tokens) - tokens).tolist(), strict=True)
    windows = iter(map_batched(client, _part_windows_at, starts, config.shard_tokens))
    shards = []
    for source, (source_dir, *_, parts) in todo.items():
        plan = plan_shards([next(windows) for _ in parts], parts)
        shards += [(pieces, str(source_dir / SHARD_PATTERN.format(k)), source)
                   for k, pieces in enumerate(plan)]
    written = map_batched(client, _write_planned_shard, shards, desc="token shards")
    for source, (source_dir, parts_dir, *_) in todo.items():
        mine = [entry for entry, (*_, of) in zip(written, shards, strict=True) if of == source]
        _remove_stale_shards(source_dir, mine)
        write_manifest(source_dir, {
            **params, "source": source, "documents": sum(s["documents"] for s in mine),
            "tokens": sum(s["tokens"] for s in mine), "shards": mine})
        remove_tree(parts_dir)
    return {s: out_path(tokens_dir) / s / MANIFEST_NAME for s in curated_partitions(curated_dir)}
