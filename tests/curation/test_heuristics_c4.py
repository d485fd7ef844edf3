"""The heuristics stage: every C4 rule hit and missed on planted texts."""

from __future__ import annotations

import json

import pytest

from tests.curation.heuristics_planting import (
    PROSE,
    removed_as,
    run,
)

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


def test_c4_drops_ellipsis_lines_and_deletes_citation_markers():
    lines = PROSE.split("\n")
    text = "\n".join([
        lines[0][:-1] + "[1].",  # a citation before the full stop
        lines[1][:-1] + "[citation needed].",
        lines[2] + "[edit][]",
        "And then the story goes on and on...",  # ends in ".", but an ellipsis
        *lines[3:],
    ])
    out, rows = run(C4, [text])
    assert out.kept["text"].tolist() == [PROSE]
    detail = json.loads(rows["0"].detail)
    assert detail["citations_removed"] == 4
    assert detail["lines_removed_by_rule"] == {"ellipsis": 1}


def test_c4_citation_only_document_is_modified_not_cut():
    text = PROSE.replace("below.", "below.[12]")
    out, rows = run(C4, [text])
    assert out.kept["text"].tolist() == [PROSE]
    assert json.loads(rows["0"].detail) == {
        "lines_removed": 0, "chars_removed": 4, "lines_removed_by_rule": {},
        "citations_removed": 1}


def test_c4_ellipsis_and_citation_rules_switch_off():
    text = PROSE[:-1] + "[3].\nAnd then the story goes on and on..."
    off = {"c4": {"remove_citations": False, "drop_ellipsis_lines": False}}
    out, rows = run(off, [text])
    assert out.kept["text"].tolist() == [text] and rows == {}
