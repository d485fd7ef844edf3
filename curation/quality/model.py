"""Training, scoring and loading the fastText quality classifier.

The classifier tells "reference-quality" text (the spec's positive sources) from raw
web text (its negative sources) on words and word bigrams, as GPT-3 did. Training runs
single-threaded with a fixed seed so the same data give a byte-identical model.

fastText's random initialisation fills the input matrix in ten blocks, one per thread;
with fewer than ten threads the remaining blocks keep whatever memory malloc returned.
A fresh mmap is zeroed, but in a long-lived process glibc serves big blocks from the
reused heap, and training then starts from garbage (nondeterministic models, "Encountered
NaN"). So training runs in a fresh interpreter whose malloc threshold is pinned: every
large block is a fresh mmap, the uninitialised rows are zeros, the model is reproducible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from curation.atomic import atomic_path, write_text_atomic
from curation.storage import is_remote, out_path
from curation.worker_cache import load_once

POSITIVE = "__label__positive"
NEGATIVE = "__label__negative"


def preprocess(texts: Sequence[str] | pd.Series) -> list[str]:
    """Lower-cased, whitespace runs (newlines included) to one space: one fastText line."""
    series = pd.Series(texts, dtype="string[pyarrow]")
    return series.str.lower().str.replace(r"\s+", " ", regex=True).str.strip().tolist()


_MMAP_THRESHOLD = 128 * 1024  # glibc's default, pinned (no adaptive growth)
_TRAIN_SCRIPT = """
import json, sys
import fasttext
kwargs = json.loads(sys.argv[1])
model = fasttext.train_supervised(**kwargs["train"])
model.save_model(kwargs["out"])
"""


def _train_in_fresh_process(train_kwargs: dict, out: Path) -> None:
    """fastText training in a new interpreter with large allocations always mmapped."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(_MMAP_THRESHOLD)}
    payload = json.dumps({"train": train_kwargs, "out": str(out)})
    done = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, payload], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"quality: fastText training failed: {done.stderr.strip()[-2000:]}")


def load_model(path: str | Path):
    """The fastText model at `path`, loaded once per process (again if the file changes)."""
    return load_once(path, _load_fasttext)


def _load_fasttext(path: str):
    import fasttext

    return fasttext.load_model(path)


def positive_probability(model, texts: Sequence[str]) -> np.ndarray:
    """P(positive) for every (preprocessed) text, in one batched predict call."""
    if len(texts) == 0:
        return np.zeros(0, dtype=np.float64)
    labels, probs = model.predict(list(texts), k=2, threshold=0.0)
    labels = np.asarray(labels)  # (n, 2): both labels, most likely first
    probs = np.asarray(probs, dtype=np.float64)
    if labels.shape != (len(texts), 2):
        raise ValueError(f"quality model must have exactly 2 labels, got shape {labels.shape}")
    score = np.where(labels[:, 0] == POSITIVE, probs[:, 0], probs[:, 1])
    return np.clip(score, 0.0, 1.0)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    truth = np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_quality_model(
    docs_pos: Sequence[str],
    docs_neg: Sequence[str],
    out_dir: str | Path,
    seed: int = 0,
    *,
    epoch: int = 10,
    lr: float = 0.1,
    word_ngrams: int = 2,
    dim: int = 32,
    bucket: int = 500_000,
    min_count: int = 1,
    holdout: float = 0.1,
    extra_metrics: dict | None = None,
) -> dict:
    """Train on positive vs negative texts, evaluate on a held-out split of each class.

    Writes out_dir/model.bin, then out_dir/metrics.json (precision, recall, accuracy and
    AUC of the positive class at 0.5, and the counts); metrics.json is written last and
    marks the model complete.
    """
    import fasttext

    if len(docs_pos) < 2 or len(docs_neg) < 2:
        raise ValueError(
            f"quality: need at least 2 documents per class, got {len(docs_pos)} positive "
            f"and {len(docs_neg)} negative (check the positive/negative source names)"
        )
    if bucket * dim * 4 < _MMAP_THRESHOLD:
        raise ValueError(f"quality: bucket * dim must be at least {_MMAP_THRESHOLD // 4} "
                         f"for a deterministic fastText model, got {bucket} * {dim}")
    out_dir = out_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    texts = preprocess(list(docs_pos) + list(docs_neg))
    labels = np.array([True] * len(docs_pos) + [False] * len(docs_neg))
    test = np.zeros(len(texts), dtype=bool)
    for cls in (True, False):
        members = np.flatnonzero(labels == cls)
        n_test = min(max(1, round(holdout * len(members))), len(members) - 1)
        test[rng.choice(members, size=n_test, replace=False)] = True
    train_idx = rng.permutation(np.flatnonzero(~test))
    with tempfile.TemporaryDirectory(dir=None if is_remote(out_dir) else out_dir) as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            for i in train_idx:
                f.write(f"{POSITIVE if labels[i] else NEGATIVE} {texts[i]}\n")
        tmp_model = Path(tmp) / "model.bin"
        _train_in_fresh_process(
            dict(input=str(train_file), epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim,
                 bucket=bucket, minCount=min_count, thread=1, seed=seed, verbose=0),
            tmp_model,
        )
        model = fasttext.load_model(str(tmp_model))
        with atomic_path(out_dir / "model.bin") as final:
            os.replace(tmp_model, final)
    held = np.flatnonzero(test)
    scores = positive_probability(model, [texts[i] for i in held])
    metrics = {**_binary_metrics(scores, labels[held]), **(extra_metrics or {})}
    metrics["counts"] = {
        "train_positive": int(labels[~test].sum()), "train_negative": int((~labels[~test]).sum()),
        "holdout_positive": int(labels[test].sum()), "holdout_negative": int((~labels[test]).sum()),
    }
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def _binary_metrics(scores: np.ndarray, truth: np.ndarray) -> dict:
    predicted = scores >= 0.5
    tp = int((predicted & truth).sum())
    return {
        "precision": tp / max(int(predicted.sum()), 1),
        "recall": tp / max(int(truth.sum()), 1),
        "accuracy": float((predicted == truth).mean()),
        "auc": roc_auc(scores, truth),
    }
