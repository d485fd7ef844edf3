"""Gopher's stop-word rule in the document's own language, on real text in eight languages."""

from __future__ import annotations

import pandas as pd
import pytest

from curation.heuristics.gopher_quality import stop_word_list
from curation.stages.heuristics import HeuristicsStage
from curation.stages.language import LanguageStage
from tests.conftest import SHARED_DATA
from tests.curation.heuristics_planting import filler, run

SAMPLE = SHARED_DATA / "langid-sample.jsonl"
# The sample's Russian pages are mojibake (UTF-8 read as Latin-1): no language stage
# recognises them, so they say nothing about stop words.
OTHER_LANGUAGES = ["cs", "es", "it", "nl", "pl", "sv"]
STOP = "gopher_quality.stop_words"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    if not SAMPLE.is_file():
        pytest.skip(f"labelled sample not found at {SAMPLE} (shared data not checked out)")
    docs = pd.read_json(SAMPLE, lines=True, dtype={"id": str})
    docs = docs.rename(columns={"lang": "label"}).assign(source="man", meta="{}")
    return docs[docs["label"].isin(OTHER_LANGUAGES)].reset_index(drop=True)


def stop_word_removals(docs: pd.DataFrame) -> pd.Series:
    out = HeuristicsStage({"gopher_quality": {}}, spec=None).process(docs, 0, None)
    removed = out.ledger[out.ledger["reason"] == STOP]
    return docs.set_index("id").loc[removed["id"], "label"].value_counts()


def test_good_text_in_other_languages_keeps_its_stop_words(sample):
    with_lang = LanguageStage({}, spec=None).annotate(sample, None)
    assert (with_lang["lang"] == with_lang["label"]).mean() > 0.8
    removed = stop_word_removals(with_lang)
    assert removed.sum() == 0, removed.to_dict()
    # Without a detected language every page is judged by the paper's English words,
    # and most of them fall (the fault this rule had).
    english_only = stop_word_removals(sample)
    assert english_only.sum() > len(sample) / 2
    assert set(english_only.index) == set(OTHER_LANGUAGES)


def test_lists_come_from_stopwords_iso_and_english_stays_the_papers():
    assert {"und", "der", "die"} <= stop_word_list("de")
    assert stop_word_list("zh-cn") == stop_word_list("zh")
    assert stop_word_list("xx") is None
    docs = pd.DataFrame({
        "id": ["en", "de", "unknown", "none"], "source": "s", "meta": "{}",
        "text": [" ".join(["the", "but", "which"] + filler(57)),  # one of the paper's 8
                 " ".join(["und"] + filler(59)),
                 " ".join(filler(60)),
                 " ".join(["the", "and"] + filler(58))],
        "lang": ["en", "de", "xx", None],
    })
    out = HeuristicsStage({"gopher_quality": {}}, spec=None).process(docs, 0, None)
    assert dict(zip(out.ledger["id"], out.ledger["reason"], strict=True)) == {
        "en": STOP, "de": STOP}
    # a language without a list is not judged by the rule; no language is English
    assert sorted(out.kept["id"]) == ["none", "unknown"]


def test_stop_words_by_language_can_be_switched_off():
    text = " ".join(["und", "der"] + filler(58))
    docs = pd.DataFrame({"id": ["0"], "source": "s", "meta": "{}", "text": [text],
                         "lang": ["de"]})
    config = {"gopher_quality": {"stop_words_by_language": False}}
    out = HeuristicsStage(config, spec=None).process(docs, 0, None)
    assert out.ledger["reason"].tolist() == [STOP]
    out, rows = run({"gopher_quality": {}}, [text])  # no `lang` column: English
    assert [r.reason for r in rows.values()] == [STOP]
