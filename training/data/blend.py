"""Which source serves each blended sample: a deterministic interleaving by weight.

The rule: source k's j-th sample is *due* at stream position (j + 1/2) / w_k, and the stream
serves samples in order of due position (ties go to the earlier source). Read sequentially,
that is a greedy rule: at each position serve the source whose next sample is most overdue,
`argmin_k (c_k + 1/2) / w_k` with c_k the samples it has served so far
(`blend_indices_reference`, a plain loop, defines it and is the tests' and benchmark's
reference). Read as a whole, it is a merge of K arithmetic sequences, which numpy does with
one stable argsort, so the whole index costs O(N log N) vectorised work, no Python per sample.

Why not Megatron's rule verbatim (`argmax_k w_k n - c_k`): its comparisons depend on the
position n, so it has no such closed form and must run one Python step per sample. Both
are greedy "serve whoever lags most", they differ in whether the lag is counted in samples or
in stream positions.

Prefix bound: after n samples, |c_k(n) - w_k n| <= 1/2 + K w_k / 2 for each of K sources.
Proof: let T be the due position of the n-th sample served. Every sample due before T is
served and none due after, so w_k T - 1/2 <= c_k <= w_k T + 1/2; summing over k (weights sum
to 1, counts to n) gives |T - n| <= K/2, hence the bound. With the MT-NLG table (K = 15) it
is 1.95 samples for the largest source and 0.52 for the smallest, at every n; the tests
check it at every prefix.
"""

from __future__ import annotations

import warnings

import numpy as np


def normalise_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weights summing to 1; warn when they did not (a typo in a blend is worth a look)."""
    bad = {name: w for name, w in weights.items() if not np.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"blend weights must be finite and >= 0, got {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"blend weights sum to {total}; at least one must be positive")
    if abs(total - 1.0) > 1e-6:
        warnings.warn(f"blend weights sum to {total:.6g}, not 1; normalising them",
                      stacklevel=2)
    return {name: w / total for name, w in weights.items()}


def _unit_sum(weights) -> np.ndarray:
    """Weights as float64 summing to 1; both implementations divide by exactly these values."""
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum()


def prefix_bound(weights: np.ndarray) -> np.ndarray:
    """The bound on |c_k(n) - w_k n| for each source at every prefix n (module docstring)."""
    weights = np.asarray(weights, dtype=np.float64)
    return 0.5 + len(weights) * weights / 2


def blend_indices(weights: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(source of each sample, that source's sample number), both length num_samples."""
    weights = _unit_sum(weights)
    active = np.flatnonzero(weights > 0)
    # The n-th sample is due by n + K/2 (module docstring), so a source serves at most
    # floor(w_k (n + K/2) + 1/2) of the first n; one more guards against rounding.
    reach = num_samples + len(weights) / 2
    counts = np.floor(weights[active] * reach + 0.5).astype(np.int64) + 1
    source = np.repeat(active, counts)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    number = np.arange(len(source), dtype=np.int64) - np.repeat(first, counts)
    due = (number + 0.5) / weights[source]
    order = np.argsort(due, kind="stable")[:num_samples]  # stable: ties to the earlier source
    source_dtype = np.uint8 if len(weights) <= 256 else np.int32
    return source[order].astype(source_dtype), number[order]


def blend_indices_reference(weights, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The same rule as `blend_indices`, one Python step per sample (its definition)."""
    weights = _unit_sum(weights).tolist()
    served = [0] * len(weights)
    sources, numbers = [], []
    for _ in range(num_samples):
        best, best_due = -1, float("inf")
        for k, w in enumerate(weights):
            if w > 0:
                due = (served[k] + 0.5) / w
                if due < best_due:
                    best, best_due = k, due
        sources.append(best)
        numbers.append(served[best])
        served[best] += 1
    return np.asarray(sources), np.asarray(numbers)


def megatron_greedy_reference(weights, num_samples: int) -> np.ndarray:
    """Megatron-LM's blending loop (argmax_k w_k * max(n, 1) - c_k), for comparison only."""
    weights = [float(w) for w in weights]
    served = [0] * len(weights)
    sources = []
    for n in range(num_samples):
        position = max(n, 1)
        best = max(range(len(weights)), key=lambda k: weights[k] * position - served[k])
        sources.append(best)
        served[best] += 1
    return np.asarray(sources)
