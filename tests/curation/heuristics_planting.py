"""Planted documents for the heuristics tests, and a one-call way to run the stage on them."""

from __future__ import annotations

import json

import pandas as pd

from curation.stages.heuristics import (
    HeuristicsConfig,
    HeuristicsStage,
)

FILLER = (
    "river stone cloud maple orange window garden silver planet harbor "
    "meadow candle forest bridge castle pepper violin rocket tunnel lantern"
).split()

PROSE = (
    "The river runs past the old mill and into the valley below.\n"
    "Farmers have worked these fields for many generations, and their stories are told.\n"
    "Each spring the water rises with melted snow from the distant mountains.\n"
    "Children walk to school along the narrow path that follows the bank.\n"
    "In the evening the lights of the houses shine across the quiet water."
)


def run(config: dict, texts: list[str]):
    """Process `texts` (ids "0", "1", ...); returns (output, {id: ledger row})."""
    docs = pd.DataFrame(
        {
            "id": [str(i) for i in range(len(texts))],
            "source": "planted",
            "text": texts,
            "meta": "{}",
        }
    )
    out = HeuristicsStage(HeuristicsConfig.model_validate(config), spec=None).process(
        docs, 0, workdir=None
    )
    rows = {row.id: row for row in out.ledger.itertuples()}
    return out, rows


def removed_as(config: dict, text: str) -> tuple[str, dict] | None:
    """(reason, detail) if the one document is removed, None if it is kept."""
    out, rows = run(config, [text])
    removed = [r for r in rows.values() if r.action == "removed"]
    if not removed:
        assert list(out.kept["id"]) == ["0"]
        return None
    assert out.kept.empty
    return removed[0].reason, json.loads(removed[0].detail)


def filler(n: int) -> list[str]:
    return [FILLER[i % len(FILLER)] for i in range(n)]


def quality_text(n_words: int, special: list[str] = ()) -> str:
    """'the and' + filler: passes every quality rule unless `special` words break one."""
    words = ["the", "and", *special]
    return " ".join(words + filler(n_words - len(words)))


def unique_words(n: int, start: int = 0) -> list[str]:
    """Distinct four-character words, so character shares are word shares."""
    return [f"w{i:03d}" for i in range(start, start + n)]
