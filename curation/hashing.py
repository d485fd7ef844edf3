"""The 64-bit integer mixing every vectorised hash in curation is built from."""

from __future__ import annotations

import numpy as np

# 2**64 / golden ratio, odd: splitmix64's increment, and a good multiplier to combine
# hashes with.
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, element-wise: spreads every input bit over the whole 64-bit
    word, so ids, sums and xors of hashes rarely collide."""
    x = np.asarray(x, dtype=np.uint64)
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
