"""A constructed `curate run` OUT for trainer tests: planted token shards per source and a
frozen spec.yaml with the blend weights, written in a fraction of a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.shards import file_sha256, token_dtype, tokens_table, write_ipc_atomic, write_manifest

EOD = 0


def write_token_source(tokens_dir: Path, name: str, docs: list[np.ndarray],
                       vocab_size: int = 60000, docs_per_shard: int = 7) -> Path:
    """Shards + manifest for documents (each already ending with EOD)."""
    source_dir = tokens_dir / name
    source_dir.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    shards = []
    for s, first in enumerate(range(0, len(docs), docs_per_shard)):
        chunk = docs[first:first + docs_per_shard]
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in chunk])]).astype(np.int32)
        flat = np.concatenate(chunk).astype(dtype)
        path = source_dir / f"shard-{s:05d}.arrow"
        write_ipc_atomic(tokens_table([f"{name}/{first + i}" for i in range(len(chunk))], flat,
                                      offsets), path)
        shards.append({"file": path.name, "documents": len(chunk), "tokens": len(flat),
                       "bytes": path.stat().st_size, "sha256": file_sha256(path)})
    write_manifest(source_dir, {
        "format": "textmill-tokens/1", "tokenizer": {"path": "../../tokenizer.json",
                                                     "sha256": "planted"},
        "vocab_size": vocab_size, "dtype": dtype.name, "eod_id": EOD, "source": name,
        "documents": len(docs), "tokens": sum(s["tokens"] for s in shards), "shards": shards})
    return source_dir


def random_docs(rng: np.random.Generator, count: int, vocab_size: int, low: int = 3,
                high: int = 40) -> list[np.ndarray]:
    """Documents of random tokens (never EOD inside), each ending with EOD."""
    return [np.append(rng.integers(1, vocab_size, size=n - 1), EOD)
            for n in rng.integers(low, high, size=count)]


def write_planted_out(out: Path, weights: dict[str, float], documents: int = 60,
                      vocab_size: int = 96, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name in weights:
        write_token_source(out / "tokens", name, random_docs(rng, documents, vocab_size),
                           vocab_size)
    lines = ["name: planted", f"tokenizer: {{train: {{vocab_size: {vocab_size}}}}}",
             "sources:"] + [
        f"  - {{name: {name}, paths: [x], weight: {w}}}" for name, w in weights.items()]
    (out / "spec.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
