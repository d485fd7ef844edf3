"""The embeddings GOT-D transports: hashed n-grams, a textmill checkpoint, or a
sentence-transformers model, all as L2-normalised float32 rows.

Unit vectors keep the OT cost (squared Euclidean distance = 2 − 2·cosine) in [0, 4] for
every kind, which the Sinkhorn solver's regularisation bound relies on (curation/select/got.py).
A model is loaded once per worker process and reused for every partition it embeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from curation.config import StrictModel
from curation.select.features import hashed_embeddings

ST_KEY = "stages.select.embedding.sentence_transformers"
MODEL_KINDS = ("checkpoint", "sentence_transformers")


def missing_sentence_transformers() -> str | None:
    """The problem, naming the key, when the sentence-transformers package is absent."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return (f"{ST_KEY}: the sentence-transformers package is not installed "
                "(pip install sentence-transformers)")
    return None


class EmbeddingSpec(StrictModel):
    """`{kind: hashed, dims: N}`, `{checkpoint: PATH}` (a textmill checkpoint or run folder;
    `tokenizer:` defaults to its run's curated tokenizer) or `{sentence_transformers: PATH}`
    (a local model folder). Paths are relative to the spec's folder."""

    kind: Literal["hashed", "checkpoint", "sentence_transformers"] | None = None
    dims: int | None = Field(None, ge=2)
    checkpoint: str | None = None
    sentence_transformers: str | None = None
    tokenizer: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> EmbeddingSpec:
        given = [k for k in MODEL_KINDS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError("give one of `checkpoint: PATH` or `sentence_transformers: PATH`")
        if self.kind is not None and self.kind != self.resolved_kind:
            raise ValueError(f"kind: {self.kind} needs `{self.kind}: PATH`" if not given else
                             f"kind: {self.kind} contradicts `{given[0]}: PATH`")
        if given and self.dims is not None:
            raise ValueError("`dims` is for hashed embeddings; a model's width is its own")
        if self.tokenizer is not None and self.resolved_kind != "checkpoint":
            raise ValueError("`tokenizer` is for `checkpoint:` embeddings only")
        return self

    @property
    def resolved_kind(self) -> str:
        return next((k for k in MODEL_KINDS if getattr(self, k) is not None), "hashed")

    def model_path(self, base_dir: Path) -> Path | None:
        path = getattr(self, self.resolved_kind, None) if self.resolved_kind != "hashed" else None
        return None if path is None else Path(base_dir) / path

    def missing_files(self, base_dir: Path) -> list[str]:
        kind, path = self.resolved_kind, self.model_path(base_dir)
        if kind == "checkpoint":
            from training.checkpoint_format import CheckpointError
            from training.init_from import resolve

            try:
                resolve(path)
            except CheckpointError as exc:
                return [f"embedding.checkpoint: {str(exc).replace('train.init_from: ', '')}"]
            if self.tokenizer and not (Path(base_dir) / self.tokenizer).is_file():
                return [f"embedding.tokenizer: no file at {Path(base_dir) / self.tokenizer}"]
        if kind == "sentence_transformers":
            problem = missing_sentence_transformers()
            if problem:
                return [problem.replace("stages.select.", "")]
            if not (path / "modules.json").is_file():
                return [f"embedding.sentence_transformers: {path} is not a saved "
                        "sentence-transformers model folder (no modules.json)"]
        return []


@lru_cache(maxsize=2)
def _checkpoint_encoder(path: str, tokenizer: str | None):
    from training.embed import CheckpointEncoder

    return CheckpointEncoder(path, tokenizer)


@lru_cache(maxsize=2)
def _sentence_transformer(path: str):
    problem = missing_sentence_transformers()
    if problem:
        raise ImportError(problem)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embed(texts: Sequence[str], kind: str, dims: int = 256, path: str | None = None,
          tokenizer: str | None = None) -> np.ndarray:
    """(len(texts), d) unit rows of the given kind (`hashed`: d = dims; a model: its width)."""
    texts = list(texts)
    if kind == "hashed":
        return hashed_embeddings(texts, dims)
    if kind == "checkpoint":
        return _unit_rows(_checkpoint_encoder(path, tokenizer).encode(texts))
    if kind == "sentence_transformers":
        model = _sentence_transformer(path)
        if not texts:
            width = getattr(model, "get_embedding_dimension",
                            model.get_sentence_embedding_dimension)()
            return np.zeros((0, width), dtype=np.float32)
        return _unit_rows(model.encode(texts, batch_size=32, convert_to_numpy=True,
                                       show_progress_bar=False))
    raise ValueError(f"unknown embedding kind {kind!r}")


def model_fingerprint(kind: str, path: str | None) -> dict:
    """What identifies the embedding model in the stage's key: the checkpoint's step folder
    and index digest, or the digest of every file of a sentence-transformers folder."""
    import hashlib

    if kind == "checkpoint":
        from training.checkpoint_format import INDEX_NAME
        from training.init_from import resolve

        ckpt = resolve(path)
        return {"checkpoint": str(ckpt),
                "index_sha256": hashlib.sha256((ckpt / INDEX_NAME).read_bytes()).hexdigest()}
    if kind == "sentence_transformers":
        digest = hashlib.sha256()
        for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
        return {"sentence_transformers_sha256": digest.hexdigest()}
    return {}
