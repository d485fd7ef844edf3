"""The global best-budget cut over scores that stay on the workers.

Every partition keeps its scores in a file; the driver only ever holds histograms and the
few scores of one bin:

1. each partition reports (min, max) of its scores;
2. each partition reports a histogram over BINS equal bins of [min, max], weighted by
   documents or by tokens; the driver finds the bin where the cumulative weight crosses
   the budget;
3. each partition returns the (score, global position, weight) of its documents in that
   bin only; the driver orders them and fixes the exact cut.

The order is (score, global position): ties break the same way on any number of workers.
A document is chosen when its key is <= the cut's key; `docs` picks exactly the budget
(or everything), `tokens` the longest prefix whose tokens stay within the budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BINS = 1 << 14


@dataclass(frozen=True)
class Cut:
    """The last chosen key (score, position); position −1 chooses nothing."""

    score: float
    position: int

    def chosen(self, scores: np.ndarray, positions: np.ndarray) -> np.ndarray:
        return (scores < self.score) | ((scores == self.score) & (positions <= self.position))

    def to_json(self) -> dict:
        return asdict(self)


EVERYTHING = Cut(float("inf"), 2**62)


def bin_of(scores: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Histogram bin of each score (identical on the workers and in every pass)."""
    if hi <= lo:
        return np.zeros(len(scores), dtype=np.int64)
    b = np.floor((scores - lo) / (hi - lo) * BINS).astype(np.int64)
    return np.clip(b, 0, BINS - 1)


def histogram(scores: np.ndarray, weights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.bincount(bin_of(scores, lo, hi), weights=weights, minlength=BINS)


def crossing_bin(hist: np.ndarray, budget: float) -> tuple[int, float]:
    """(bin where the cumulative weight first exceeds the budget, weight below it)."""
    cumulative = np.cumsum(hist)
    b = int(np.searchsorted(cumulative, budget, side="right"))
    return b, float(cumulative[b - 1]) if b > 0 else 0.0


def cut_in_bin(scores: np.ndarray, positions: np.ndarray, weights: np.ndarray,
               below: float, budget: float) -> Cut:
    """The cut among the documents of the crossing bin, given the weight below it."""
    order = np.lexsort((positions, scores))
    taken = below + np.cumsum(weights[order])
    k = int(np.searchsorted(taken, budget, side="right"))  # documents that still fit
    if k == 0:  # everything below the bin, nothing in it
        return Cut(float(np.nextafter(scores[order[0]], -np.inf)), 2**62)
    last = order[k - 1]
    return Cut(float(scores[last]), int(positions[last]))

