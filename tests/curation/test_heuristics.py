"""The heuristics stage: Gopher's quality rules hit and missed on planted texts, the config
semantics and the accounting. The repetition and C4 rules have files of their own."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from pydantic import ValidationError

from curation.stages.heuristics import (
    GopherQualityConfig,
    GopherRepetitionConfig,
    HeuristicsConfig,
    HeuristicsStage,
)
from tests.curation.heuristics_planting import (
    PROSE,
    filler,
    quality_text,
    removed_as,
    run,
)

QUALITY = {"gopher_quality": {}}


def stop_plus(word: str, n: int = 58) -> str:
    return " ".join(["the", "and"] + [word] * n)


@pytest.mark.parametrize(
    "text, expected",
    [
        (quality_text(49), ("word_count", 49, 50, "min")),
        (quality_text(50), None),
        (" ".join(["the", "of"] + ["cat"] * 99_999), ("word_count", 100_001, 100_000, "max")),
        (quality_text(100_000), None),
        # 2 stop words (3 chars) + 58 two-letter words: 122 / 60 characters per word
        (stop_plus("ab"), ("mean_word_length", 2.033333, 3.0, "min")),
        (stop_plus("abc"), None),  # exactly 3.0 passes
        (stop_plus("abcdefghijk"), ("mean_word_length", 10.733333, 10.0, "max")),
        (quality_text(60, ["#tag"] * 7), ("symbol_word_ratio", 0.116667, 0.1, "max")),
        (quality_text(60, ["#tag"] * 6), None),  # 6 / 60 = 0.1 passes
        (quality_text(60, ["so..."] * 4 + ["…"] * 3), ("symbol_word_ratio", 0.116667, 0.1, "max")),
        (quality_text(60, ["1234"] * 13), ("alpha_words", 0.783333, 0.8, "min")),
        (quality_text(60, ["1234"] * 12), None),
        (" ".join(["the"] * 5 + filler(55)), ("stop_words", 1, 2, "min")),
        (" ".join(["The,", "OF."] + filler(58)), None),  # case and punctuation ignored
    ],
    ids=[
        "words_49", "words_50", "words_100001", "words_100000", "mean_short", "mean_3",
        "mean_long", "hash_7", "hash_6", "ellipsis_7", "alpha_47", "alpha_48", "stop_1",
        "stop_2",
    ],
)  # fmt: skip
def test_gopher_quality_word_rules(text, expected):
    result = removed_as(QUALITY, text)
    if expected is None:
        assert result is None
        return
    rule, value, threshold, limit = expected
    assert result[0] == "gopher_quality." + rule
    detail = {"value": pytest.approx(value, abs=1e-6), "threshold": threshold, "limit": limit}
    assert result[1] == detail


def line_text(n_lines: int, marked: int, prefix: str = "", suffix: str = "") -> str:
    """n_lines lines of 10 words; the first `marked` get the prefix and suffix."""
    lines = []
    for i in range(n_lines):
        words = ["the", "and", *filler(8)]
        line = " ".join(words)
        lines.append(prefix + line + suffix if i < marked else line)
    return "\n".join(lines)


@pytest.mark.parametrize(
    "text, expected",
    [
        (line_text(10, 10, prefix="• "), ("gopher_quality.bullet_lines", 1.0, 0.9)),
        (line_text(10, 9, prefix="- "), None),  # 0.9 passes
        (line_text(10, 4, suffix=" ..."), ("gopher_quality.ellipsis_lines", 0.4, 0.3)),
        (line_text(10, 3, suffix="…") + "\n\n\n", None),  # blank lines are not lines
    ],
    ids=["bullets_10", "bullets_9", "ellipsis_4", "ellipsis_3"],
)
def test_gopher_quality_line_rules(text, expected):
    result = removed_as(QUALITY, text)
    if expected is None:
        assert result is None
        return
    reason, value, threshold = expected
    assert result == (reason, {"value": value, "threshold": threshold, "limit": "max"})


def test_gopher_quality_rules_switch_off_one_by_one():
    short = quality_text(10)
    assert removed_as(QUALITY, short)[0] == "gopher_quality.word_count"
    assert removed_as({"gopher_quality": {"min_words": None}}, short) is None
    no_stop = " ".join(filler(60))
    assert removed_as(QUALITY, no_stop)[0] == "gopher_quality.stop_words"
    assert removed_as({"gopher_quality": {"min_stop_words": None}}, no_stop) is None
    numbers = " ".join(["the", "and"] + ["12345"] * 58)
    assert removed_as(QUALITY, numbers)[0] == "gopher_quality.alpha_words"
    assert removed_as({"gopher_quality": {"min_alpha_word_fraction": 0.0}}, numbers) is None


def test_first_failing_rule_is_reported():
    # Too short *and* no stop words: word_count comes first.
    assert removed_as(QUALITY, " ".join(filler(10)))[0] == "gopher_quality.word_count"
    # Fails C4 (no sentences) and Gopher quality: C4 page rules come first.
    everything = {"c4": {}, "gopher_quality": {}, "gopher_repetition": {}}
    result = removed_as(everything, "Just three words.")
    assert result == ("c4.sentence_count", {"value": 1, "threshold": 5, "limit": "min"})


def test_real_prose_mostly_passes_gopher_quality():
    from pydoc_data.topics import topics

    paragraphs = [p.strip() for text in topics.values() for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if len(p.split()) >= 50]
    assert len(paragraphs) > 100
    out, rows = run(QUALITY, paragraphs)
    assert len(out.kept) / len(paragraphs) > 0.8
    # What fails is mostly grammar and code listings, with few words containing letters.
    reasons = pd.Series([r.reason for r in rows.values()]).value_counts()
    assert reasons.index[0] == "gopher_quality.alpha_words"


def test_yaml_empty_mapping_means_paper_defaults_and_missing_means_off():
    config = HeuristicsConfig.model_validate({"gopher_quality": {}, "c4": None})
    assert config.gopher_quality == GopherQualityConfig()
    assert (config.gopher_quality.min_words, config.gopher_quality.max_words) == (50, 100_000)
    assert config.gopher_repetition is None and config.c4 is None
    repetition = GopherRepetitionConfig()
    assert repetition.max_top_3gram_char_fraction == 0.18
    assert repetition.max_dup_10gram_char_fraction == 0.10
    out, rows = run({}, ["", "x", " ".join(["spam"] * 10)])
    assert len(out.kept) == 3 and rows == {}


@pytest.mark.parametrize(
    "config, field",
    [
        ({"gopher_qualty": {}}, "gopher_qualty"),
        ({"gopher_quality": {"min_word": 3}}, "min_word"),
        ({"c4": {"javascript": False}}, "javascript"),
        ({"gopher_repetition": {"max_dup_line_fraction": 1.5}}, "max_dup_line_fraction"),
        ({"gopher_quality": {"min_words": 10, "max_words": 5}}, "min_words"),
    ],
)
def test_bad_config_is_rejected_naming_the_field(config, field):
    with pytest.raises(ValidationError, match=field):
        HeuristicsConfig.model_validate(config)


def test_accounting_every_document_kept_or_removed_once():
    everything = {"gopher_quality": {}, "gopher_repetition": {}, "c4": {}}
    texts = [
        PROSE,
        PROSE + "\nClick here",  # modified, kept
        "",  # emptied
        "\n".join([PROSE] * 3),  # repetitive
        PROSE + "\nLorem ipsum dolor sit amet.",
        " ".join(filler(80)) + ".",
    ]
    docs = pd.DataFrame(
        {"id": [f"d{i}" for i in range(len(texts))], "source": "s", "text": texts, "meta": "{}"}
    )
    docs["lang"] = "en"
    out = HeuristicsStage(HeuristicsConfig.model_validate(everything), None).process(docs, 3, None)
    removed = set(out.ledger.loc[out.ledger.action == "removed", "id"])
    modified = set(out.ledger.loc[out.ledger.action == "modified", "id"])
    kept = set(out.kept["id"])
    assert len(kept) + len(removed) == len(docs)
    assert kept | removed == set(docs["id"]) and not kept & removed
    assert modified == {"d1"} <= kept
    assert list(out.kept.columns) == list(docs.columns)
    assert set(out.ledger["stage"]) == {"heuristics"}

    empty = HeuristicsStage(HeuristicsConfig.model_validate(everything), None).process(
        docs.iloc[:0], 0, None
    )
    assert empty.kept.empty and empty.ledger.empty


def test_gopher_measures_the_document_as_it_entered_not_after_c4_lines():
    """C4's line filter would cut the bullet menu and leave clean prose; Gopher judges the
    page as it arrived (datatrove/FineWeb order), where 95% of the lines are bullets."""
    text = PROSE + "\n" + "\n".join(["- menu item"] * 100)
    both = {"c4": {}, "gopher_quality": {}}
    assert removed_as(both, text) == (
        "gopher_quality.bullet_lines",
        {"value": round(100 / 105, 6), "threshold": 0.9, "limit": "max"},
    )
    out, rows = run({"c4": {}}, [text])  # C4 alone keeps the prose it cut out
    assert out.kept["text"].tolist() == [PROSE]


def test_text_column_in_several_arrow_chunks():
    """pandas 3 keeps a concatenated `str` column as several Arrow chunks."""
    halves = [pd.DataFrame({"id": [str(i)], "source": "s", "meta": "{}", "text": [PROSE]},
                           dtype="str") for i in range(2)]
    docs = pd.concat(halves, ignore_index=True)
    out = HeuristicsStage({"c4": {}, "gopher_quality": {}}, spec=None).process(docs, 0, None)
    assert out.kept["id"].tolist() == ["0", "1"]
