"""A document rule: a named bound on one measure, and finding each document's first failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

NOT_FAILED = -1


@dataclass(frozen=True)
class Rule:
    """`name` fails a document whose `measure` is below (`limit="min"`) or above
    (`limit="max"`) `threshold`. The ledger reason is `name`."""

    name: str
    measure: str
    threshold: float
    limit: Literal["min", "max"]

    def fails(self, values: np.ndarray) -> np.ndarray:
        if self.limit == "min":
            return values < self.threshold
        return values > self.threshold

    def detail(self, value: float) -> dict:
        value = float(value)
        shown = int(value) if value.is_integer() else round(value, 6)
        return {"value": shown, "threshold": self.threshold, "limit": self.limit}


def bound(name: str, measure: str, threshold: float | None, limit: str) -> list[Rule]:
    """The rule as a one-element list, or none when its threshold is switched off (None)."""
    return [] if threshold is None else [Rule(name, measure, threshold, limit)]


def first_failures(
    rules: Sequence[Rule], measures: Mapping[str, np.ndarray], candidates: np.ndarray
) -> np.ndarray:
    """Per document: the index in `rules` of its first failing rule, or NOT_FAILED.

    Only `candidates` (a boolean mask) are judged; the others stay NOT_FAILED.
    """
    failed = np.full(len(candidates), NOT_FAILED, dtype=np.int64)
    for index, rule in enumerate(rules):
        open_ = candidates & (failed == NOT_FAILED)
        failed[open_ & rule.fails(measures[rule.measure])] = index
    return failed
