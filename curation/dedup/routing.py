"""How fuzzy dedup's global step is cut into tasks that each fit `memory_budget_mb`.

Everything here is decided from counts before the work it plans starts, so nothing is
attempted and then dropped:
  - candidate pairs are deduplicated by groups of consecutive partitions of their `lo`
    document, each group's pairs within the budget (from per-partition pair counts);
  - each partition's candidate shingle sets are cut into blocks, and consecutive blocks
    (in doc-key order) into bins, so that the two bins a verification task holds fit its
    share of the budget;
  - each pair goes to the task of its (bin of lo, bin of hi), in chunks of at most the
    pairs a task may hold.
Doc keys are (partition << 32 | row), so key order is partition order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BYTES_PER_PAIR = 16 * 8  # a candidate pair while pairs are deduplicated, with its copies
_SET_COPIES = 3  # a verification task holds its bins' sets ~3 times (Arrow, decoded, taken)
_META_COPIES = 3  # doc, id and source of a node in the keeper task (Arrow, pandas, sorted)
BYTES_PER_EDGE = 16 * 6  # a verified edge while components are labelled (components.py)


@dataclass(frozen=True)
class Budget:
    """What one task may hold, in bytes, and what that allows of each kind of data."""

    bytes: int

    @property
    def plan_pairs(self) -> int:
        """Candidate pairs one deduplicating task may hold."""
        return max(1, self.bytes // _BYTES_PER_PAIR)

    @property
    def verify_pairs(self) -> int:
        """Pairs per verification task: a quarter of the budget."""
        return max(1, self.bytes // 4 // _BYTES_PER_PAIR)

    @property
    def bin_bytes(self) -> int:
        """Encoded shingle sets per bin: two bins, held ~3 times, in 3/4 of the budget."""
        return self.bytes * 3 // 4 // (2 * _SET_COPIES)

    def fits_one_keeper_task(self, edges: int, meta_bytes: int) -> bool:
        """Whether components and keepers of up to `edges` verified edges over nodes whose
        ids and sources take `meta_bytes` fit one task."""
        return edges * BYTES_PER_EDGE + meta_bytes * _META_COPIES <= self.bytes


def runs_within(sizes, cap: int) -> list[int]:
    """Start indices of consecutive runs of `sizes` whose sums stay within `cap` (a single
    item over `cap` is a run of its own)."""
    starts, total = [], 0
    for i, size in enumerate(int(s) for s in sizes):
        if not starts or total + size > cap:
            starts.append(i)
            total = 0
        total += size
    return starts


def part_groups(pairs_per_part: np.ndarray, max_pairs: int) -> list[tuple[int, int]]:
    """Partition ranges [a, b) whose pairs (counted by the partition of `lo`) stay within
    `max_pairs`; ranges without any pair are left out."""
    counts = np.asarray(pairs_per_part, dtype=np.int64)
    starts = runs_within(counts, max_pairs) + [len(counts)]
    return [(a, b) for a, b in zip(starts[:-1], starts[1:], strict=True) if counts[a:b].sum()]


def block_cuts(row_bytes: np.ndarray, max_bytes: int) -> list[int]:
    """Row ranges of one partition's candidate sets: the start row of each block."""
    return runs_within(row_bytes, max_bytes) if len(row_bytes) else []


def bin_of(keys: np.ndarray, bin_keys: np.ndarray) -> np.ndarray:
    """The bin of each doc key; bin k covers keys from bin_keys[k] to the next one."""
    return np.searchsorted(bin_keys, keys, side="right") - 1


def route_pairs(lo: np.ndarray, hi: np.ndarray, bin_keys: np.ndarray,
                max_pairs: int) -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """The pairs of each verification task, keyed (bin of lo, bin of hi, chunk)."""
    lo_bin, hi_bin = bin_of(lo, bin_keys), bin_of(hi, bin_keys)
    if len(lo) and lo_bin.min() < 0:
        raise ValueError("fuzzy_dedup: a candidate document lies before the first bin")
    order = np.lexsort((hi, lo, hi_bin, lo_bin))
    lo, hi, lo_bin, hi_bin = lo[order], hi[order], lo_bin[order], hi_bin[order]
    cell = np.flatnonzero(np.diff(lo_bin) | np.diff(hi_bin)) + 1
    bounds = [0, *cell.tolist(), len(lo)]
    routed = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b <= a:
            continue
        for chunk, start in enumerate(range(a, b, max_pairs)):
            end = min(b, start + max_pairs)
            routed[(int(lo_bin[a]), int(hi_bin[a]), chunk)] = (lo[start:end], hi[start:end])
    return routed
