"""The filter base writes every stage's ledger rows: a stage says what it keeps and why it
removed or changed the rest; `Stage.process` turns that into rows, in order."""

from __future__ import annotations

import json

import pandas as pd

from curation.documents import LEDGER_COLUMNS
from curation.stages.base import Decided, Modified, Removed, ScopedConfig, Stage


class ShortOrShouting(Stage):
    """Removes texts under 5 characters, lower-cases texts in capitals."""

    name = "toy"

    def run(self, docs, part, workdir):
        short = docs["text"].str.len() < 5
        loud = ~short & (docs["text"] == docs["text"].str.upper())
        kept = docs[~short].copy()
        kept.loc[loud[~short], "text"] = kept.loc[loud[~short], "text"].str.lower()
        return Decided(kept, [
            Removed(docs[short], "too_short", [{"chars": len(t)} for t in docs[short]["text"]]),
            Modified(docs[loud], "lowered"),
        ])


def docs() -> pd.DataFrame:
    return pd.DataFrame({"id": ["a", "b", "c", "d"], "source": ["web", "web", "code", "web"],
                         "text": ["hi", "LOUD TEXT", "tiny", "fine text"], "meta": ["{}"] * 4})


def test_the_base_writes_the_rows_of_what_a_stage_decided():
    out = ShortOrShouting(ScopedConfig(), None).process(docs(), 0, None)
    assert out.kept["text"].tolist() == ["loud text", "fine text"]
    assert list(out.ledger.columns) == LEDGER_COLUMNS
    assert out.ledger[["id", "stage", "action", "reason"]].values.tolist() == [
        ["a", "toy", "removed", "too_short"], ["c", "toy", "removed", "too_short"],
        ["b", "toy", "modified", "lowered"]]
    assert [json.loads(d) for d in out.ledger["detail"]] == [{"chars": 2}, {"chars": 4}, {}]


def test_out_of_scope_documents_pass_and_get_no_rows():
    out = ShortOrShouting(ScopedConfig(exempt=["code"]), None).process(docs(), 0, None)
    assert sorted(out.kept["id"]) == ["b", "c", "d"]
    assert out.ledger["id"].tolist() == ["a", "b"]


def test_nothing_decided_is_an_empty_ledger():
    quiet = pd.DataFrame({"id": ["x"], "source": ["web"], "text": ["plain words"],
                          "meta": ["{}"]})
    out = ShortOrShouting(ScopedConfig(), None).process(quiet, 0, None)
    assert len(out.kept) == 1 and out.ledger.empty
    assert list(out.ledger.columns) == LEDGER_COLUMNS
