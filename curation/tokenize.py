"""The DAG's last step: curated documents -> a tokenizer -> token shards per source.

Determinism: every worker encodes one curated partition into one *part* file (a pure
function of that partition and the tokenizer); the driver then reads the parts of a source
in sorted order and cuts them into shards of about `shard_tokens` tokens at document
boundaries. So the shards depend only on the curated input and the tokenizer, never on the
number of workers, and a crashed run resumes: finished parts and finished sources
(manifest present, shard files of the recorded size) are not redone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.atomic import atomic_path
from curation.config import StrictModel
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
from curation.storage import (
    out_path,
    parquet_file,
    parquet_rows,
    read_ipc_table,
    read_parquet_table,
    remove_tree,
    resolved,
)

EOD_TOKEN = "<|endoftext|>"
CURATED_GLOB = "part-*.parquet"


class TrainTokenizerConfig(StrictModel):
    """Train a byte-level BPE on (a deterministic sample of) the curated corpus."""

    vocab_size: int = Field(default=8192, gt=256)
    special_tokens: list[str] = [EOD_TOKEN]
    min_frequency: int = Field(default=2, ge=1)
    max_docs: int = Field(default=200_000, gt=0)  # evenly strided sample of the corpus


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


def _strided_texts(parts: list[Path], max_docs: int) -> Iterator[str]:
    """Every k-th document of the corpus in canonical order, k chosen to yield <= max_docs."""
    total = sum(parquet_rows(p) for p in parts)
    stride = max(1, -(-total // max_docs))
    position = 0
    for part in parts:
        for batch in parquet_file(part).iter_batches(columns=["text"], batch_size=4096):
            texts = batch.column(0).to_pylist()
            first = (-position) % stride
            yield from texts[first::stride]
            position += len(texts)


def _train(config: TrainTokenizerConfig, parts: list[Path]):
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
    tokenizer.train_from_iterator(_strided_texts(parts, config.max_docs), trainer)
    return tokenizer


def _check_eod(tokenizer, config: TokenizerConfig, where: str) -> None:
    if tokenizer.token_to_id(config.eod_token) is None:
        raise ValueError(f"{where}: the tokenizer has no end-of-document token "
                         f"{config.eod_token!r} (tokenizer.eod_token)")


def train_or_load_tokenizer(config: TokenizerConfig, curated_dir: Path, out_dir: Path,
                            spec_base_dir: Path):
    """Train or load the tokenizer, save it to OUT/tokenizer.json; return (tokenizer, sha256)."""
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
        tokenizer = _train(config.train, parts)
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
                      eod_id: int, dtype_name: str, batch_docs: int) -> str:
    """Worker task: one curated partition -> one part file (skipped when already there)."""
    final = out_path(part_path)
    if final.exists():
        return part_path
    table = read_parquet_table(curated, columns=["id", "text"])
    tokenizer = _worker_tokenizer(tokenizer_path, sha)
    flat, offsets = encode_documents(tokenizer, table.column("text").to_pylist(), eod_id,
                                     np.dtype(dtype_name), batch_docs)
    write_ipc_atomic(tokens_table(table.column("id").to_pylist(), flat, offsets), final)
    return part_path


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


def _read_parts(parts: list[Path]) -> pa.Table:
    tables = [read_ipc_table(p) for p in parts]
    return pa.concat_tables(tables) if tables else None


def _canonical(table: pa.Table) -> pa.Table:
    """A freshly built copy: the bytes of a shard must not depend on how its parts were cut."""
    tokens = table.column("tokens")
    lengths = pc.list_value_length(tokens).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = pc.list_flatten(tokens).to_numpy()
    return tokens_table(table.column("id").to_pylist(), flat, offsets)


def _write_shards(source: str, parts: list[Path], source_dir: Path, params: dict,
                  shard_tokens: int) -> Path:
    """Cut the parts (in order) into shards of >= shard_tokens tokens at document boundaries."""
    table = _read_parts(parts)
    shards = []
    if table is not None and table.num_rows:
        lengths = pc.list_value_length(table.column("tokens")).to_numpy()
        cumulative = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        start = 0
        while start < table.num_rows:
            end = int(np.searchsorted(cumulative, cumulative[start] + shard_tokens, "left"))
            end = min(max(end, start + 1), table.num_rows)
            name = SHARD_PATTERN.format(len(shards))
            write_ipc_atomic(_canonical(table.slice(start, end - start)), source_dir / name)
            shards.append({"file": name, "documents": end - start,
                           "tokens": int(cumulative[end] - cumulative[start]),
                           "bytes": (source_dir / name).stat().st_size,
                           "sha256": file_sha256(source_dir / name)})
            start = end
    keep = {s["file"] for s in shards}
    for stale in source_dir.glob("shard-*.arrow"):
        if stale.name not in keep:
            stale.unlink()
    manifest = {**params, "source": source,
                "documents": sum(s["documents"] for s in shards),
                "tokens": sum(s["tokens"] for s in shards), "shards": shards}
    return write_manifest(source_dir, manifest)


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

    todo, futures = {}, []
    for source, partitions in curated_partitions(curated_dir).items():
        source_dir = out_path(tokens_dir) / source
        if _source_is_done(source_dir, params):
            continue
        parts_dir = source_dir / f"_parts-{sha[:16]}"
        parts = [parts_dir / f"part-{i:05d}.arrow" for i in range(len(partitions))]
        todo[source] = (source_dir, parts_dir, parts)
        futures += [client.submit(_encode_partition, str(c), str(p), str(tokenizer_path), sha,
                                  eod_id, dtype.name, config.batch_docs, pure=False)
                    for c, p in zip(partitions, parts, strict=True)]
    if futures:
        from curation.progress import track

        track(futures, "tokenize")
        client.gather(futures)
    for source, (source_dir, parts_dir, parts) in todo.items():
        _write_shards(source, parts, source_dir, params, config.shard_tokens)
        remove_tree(parts_dir)
    return {s: out_path(tokens_dir) / s / MANIFEST_NAME for s in curated_partitions(curated_dir)}
