"""The heuristics stage: every C4 and Gopher rule hit and missed on planted texts."""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------- Gopher quality

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


# ----------------------------------------------------------------------- Gopher repetition


def only(rule: str, threshold: float | None = None) -> dict:
    """A repetition config with every rule off except `rule` (at its default or `threshold`)."""
    fields = dict.fromkeys(GopherRepetitionConfig.model_fields)
    fields[rule] = (
        threshold if threshold is not None else GopherRepetitionConfig.model_fields[rule].default
    )
    return {"gopher_repetition": fields}


def lines_of(*word_counts: int) -> list[str]:
    """Lines of distinct words, with the given numbers of words."""
    lines, start = [], 0
    for count in word_counts:
        lines.append(" ".join(unique_words(count, start)))
        start += count
    return lines


@pytest.mark.parametrize("kind, separator", [("line", "\n"), ("paragraph", "\n\n")])
def test_duplicate_line_and_paragraph_fraction(kind, separator):
    rule = f"max_dup_{kind}_fraction"
    base = lines_of(*[5] * 6)
    hit = separator.join(base + [base[0]] * 4)  # 4 of 10 repeat an earlier one
    miss = separator.join(base + [base[0]] * 2 + ["   "])  # 2 of 8 (blank ones ignored)
    assert removed_as(only(rule), hit) == (
        f"gopher_repetition.dup_{kind}_fraction",
        {"value": 0.4, "threshold": 0.3, "limit": "max"},
    )
    assert removed_as(only(rule), miss) is None


@pytest.mark.parametrize("kind, separator", [("line", "\n"), ("paragraph", "\n\n")])
def test_duplicate_line_and_paragraph_character_fraction(kind, separator):
    rule = f"max_dup_{kind}_char_fraction"
    # A 20-word line (99 chars) twice among eight 3-word lines (14 chars): 99 / 310.
    hit = separator.join(lines_of(20) * 2 + lines_of(*[3] * 8))
    # An 8-word line (39 chars) twice among twelve 3-word lines: 39 / 246.
    miss = separator.join(lines_of(8) * 2 + lines_of(*[3] * 12))
    reason, detail = removed_as(only(rule), hit)
    assert reason == f"gopher_repetition.dup_{kind}_char_fraction"
    assert detail["value"] == pytest.approx(99 / 310, abs=1e-6)
    assert removed_as(only(rule), miss) is None
    # The same line repeated is only 1 of 10 lines: the line-count rule passes it.
    assert removed_as(only(f"max_dup_{kind}_fraction"), hit) is None


@pytest.mark.parametrize("n, threshold", [(2, 0.20), (3, 0.18), (4, 0.16)])
def test_top_ngram_character_share(n, threshold):
    rule = f"max_top_{n}gram_char_fraction"
    phrase = [f"x{i:03d}" for i in range(n)]

    def text(copies: int) -> str:
        words = []
        for i in range(copies):  # each copy followed by a distinct word
            words += phrase + unique_words(1, start=i)
        return " ".join(words + unique_words(100 - len(words), start=500))

    hit_copies = int(threshold * 100 / n) + 1
    reason, detail = removed_as(only(rule), text(hit_copies))
    assert reason == f"gopher_repetition.top_{n}gram_char_fraction"
    assert detail["value"] == pytest.approx(hit_copies * n / 100)
    assert removed_as(only(rule), text(hit_copies - 1)) is None


def test_top_ngram_overlapping_occurrences_count_each_character_once():
    # 25 copies of one word: its 2-gram occurs 24 times but covers 25 words, not 48.
    text = " ".join(["zzzz"] * 25 + unique_words(75))
    reason, detail = removed_as(only("max_top_2gram_char_fraction"), text)
    assert (reason, detail["value"]) == ("gopher_repetition.top_2gram_char_fraction", 0.25)


def test_top_ngram_seen_once_is_not_repetition():
    # 60 distinct words: every 2-gram occurs once, so nothing is repeated.
    assert removed_as(only("max_top_2gram_char_fraction", 0.0), " ".join(unique_words(60))) is None


@pytest.mark.parametrize("n", range(5, 11))
def test_duplicate_ngram_character_share(n):
    rule = f"max_dup_{n}gram_char_fraction"

    def text(block_words: int) -> str:
        block = unique_words(block_words, start=900)
        rest = unique_words(100 - 2 * block_words)
        half = len(rest) // 2
        return " ".join(block + rest[:half] + block + rest[half:])

    # A 10-word passage twice in 100 words: both copies count, 20 of 100 words.
    reason, detail = removed_as(only(rule), text(10))
    assert reason == f"gopher_repetition.dup_{n}gram_char_fraction"
    assert detail["value"] == pytest.approx(0.2)
    # A repeated passage shorter than n holds no repeated n-gram.
    assert removed_as(only(rule, 0.0), text(n - 1)) is None


def test_duplicate_ngram_overlaps_count_once_and_characters_are_weighted():
    # "aa bbbbbbbb" x 6 = 12 words of 60 chars repeats; 5-grams overlap all over it.
    # Covered: the 12 words (60 chars) of 48 + 60 = 108 word characters.
    text = " ".join(["aa", "bbbbbbbb"] * 6 + unique_words(12))
    reason, detail = removed_as(only("max_dup_5gram_char_fraction"), text)
    assert reason == "gopher_repetition.dup_5gram_char_fraction"
    assert detail["value"] == pytest.approx(60 / 108, abs=1e-6)


def test_repetition_defaults_pass_distinct_text_and_stop_the_repetitive():
    config = {"gopher_repetition": {}}
    assert removed_as(config, PROSE) is None
    reason, _ = removed_as(config, "\n".join([PROSE] * 3))
    assert reason == "gopher_repetition.dup_line_fraction"


# --------------------------------------------------------------------------------------- C4

C4 = {"c4": {}}
LONG_WORD = "x" * 1001


def test_c4_line_filter_removes_each_kind_of_bad_line():
    bad = [
        f"This line has a {LONG_WORD} word.",  # word_too_long
        "Please enable JavaScript to view this page.",  # javascript
        "Read our Privacy Policy before you continue.",  # policy
        "Too short.",  # too_few_words
        "This line has no final punctuation",  # no_terminal_punctuation
    ]
    good = PROSE.split("\n") + ['He said "this counts too."']
    text = "\n".join(good[:3] + bad + good[3:])
    out, rows = run(C4, [text])
    expected = "\n".join(good)
    assert out.kept["text"].tolist() == [expected]
    row = rows["0"]
    assert (row.action, row.reason) == ("modified", "c4.line_filter")
    assert json.loads(row.detail) == {
        "lines_removed": 5,
        "chars_removed": len(text) - len(expected),
        "lines_removed_by_rule": {
            "word_too_long": 1,
            "javascript": 1,
            "policy": 1,
            "too_few_words": 1,
            "no_terminal_punctuation": 1,
        },
    }


def test_c4_line_filter_keeps_paragraphs_and_untouched_text():
    lines = PROSE.split("\n")
    text = "\n\n".join(lines[:2]) + "\n\nmenu\n\nhome\n\n" + "\n\n".join(lines[2:])
    out, rows = run(C4, [text, PROSE])
    assert out.kept["text"].tolist() == ["\n\n".join(lines), PROSE]
    assert list(rows) == ["0"]  # the untouched document has no ledger row


def test_c4_document_emptied_by_line_filter_is_removed():
    result = removed_as(C4, "Home\nAbout us\nContact")
    assert result == ("c4.empty_after_line_filter", {"value": 0, "threshold": 1, "limit": "min"})


@pytest.mark.parametrize(
    "extra, reason, value, threshold, limit",
    [
        ("Lorem ipsum dolor sit amet.", "c4.lorem_ipsum", 1, 0, "max"),
        ("The set {1, 2} has two elements.", "c4.curly_bracket", 1, 0, "max"),
    ],
)
def test_c4_page_rules(extra, reason, value, threshold, limit):
    detail = {"value": value, "threshold": threshold, "limit": limit}
    assert removed_as(C4, PROSE + "\n" + extra) == (reason, detail)
    assert removed_as(C4, PROSE) is None


def test_c4_sentence_count():
    four = "One two three. Four five six! Seven eight nine? Ten eleven twelve, 3.5 and done."
    result = removed_as(C4, four)
    assert result == ("c4.sentence_count", {"value": 4, "threshold": 5, "limit": "min"})
    assert removed_as(C4, four + " Thirteen fourteen fifteen.") is None


@pytest.mark.parametrize(
    "switch, bad_line",
    [
        ({"max_word_chars": None}, f"A long {LONG_WORD} word here."),
        ({"drop_javascript_lines": False}, "Please enable JavaScript to continue."),
        ({"policy_phrases": None}, "This site uses cookies to work."),
        ({"min_line_words": None}, "Short."),
        ({"terminal_punctuation": None}, "A line without punctuation"),
    ],
)
def test_c4_line_rules_switch_off(switch, bad_line):
    text = PROSE + "\n" + bad_line
    out, _ = run(C4, [text])
    assert out.kept["text"].tolist() == [PROSE]
    out, rows = run({"c4": switch}, [text])
    assert out.kept["text"].tolist() == [text]
    assert rows == {}


def test_c4_page_rules_switch_off():
    off = {"c4": {"drop_lorem_ipsum": False, "drop_curly_bracket": False, "min_sentences": None}}
    texts = [
        PROSE + "\nLorem ipsum dolor sit amet.",
        PROSE + "\nThe set {1} is small.",
        "Hi there you.",
    ]
    out, rows = run(off, texts)
    assert out.kept["text"].tolist() == texts
    assert rows == {}


# ------------------------------------------------------------------- config and accounting


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
