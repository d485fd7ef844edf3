"""The keep rule on a quality score: GPT-3's Pareto sampling or a plain threshold.

GPT-3 kept a document when `np.random.pareto(alpha) > 1 - score`: high scores are kept
almost surely, low ones sometimes, so the corpus is not narrowed to the classifier's
idea of quality. Here the draw comes from a hash of (seed, document id) pushed through
the Pareto inverse CDF, so a document's fate depends on nothing but its id, the seed
and its score: not on partitioning, worker count or order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd


def uniform_draws(ids: Sequence[str], seed: int, salt: str = "quality") -> np.ndarray:
    """One uniform [0, 1) number per id, a pure function of (seed, salt, id)."""
    key = hashlib.blake2b(f"{salt}:{seed}".encode(), digest_size=8).hexdigest()
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=key, categorize=False)
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def pareto_draws(ids: Sequence[str], seed: int, alpha: float) -> np.ndarray:
    """Draws distributed as `np.random.pareto(alpha)` (Lomax: P(X > x) = (1 + x)^-alpha)."""
    u = uniform_draws(ids, seed)
    return (1.0 - u) ** (-1.0 / alpha) - 1.0


def keep_decisions(
    scores: np.ndarray, ids: Sequence[str], seed: int, alpha: float, threshold: float | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(keep mask, draws): the threshold rule when `threshold` is given, else Pareto."""
    scores = np.asarray(scores, dtype=np.float64)
    if threshold is not None:
        return scores >= threshold, None
    draws = pareto_draws(ids, seed, alpha)
    return draws > 1.0 - scores, draws
