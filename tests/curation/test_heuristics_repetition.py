"""The heuristics stage: every Gopher repetition rule hit and missed on planted texts."""

from __future__ import annotations

import numpy as np
import pytest

from curation.heuristics import gopher_repetition
from curation.heuristics.layout import TextLayout
from curation.heuristics.pieces import as_text_array
from curation.stages.heuristics import (
    GopherRepetitionConfig,
)
from tests.curation.heuristics_planting import (
    PROSE,
    removed_as,
    unique_words,
)


def repetition_of(text: str, config) -> dict:
    layout = TextLayout(as_text_array([text]))
    return gopher_repetition.measure(layout, layout.doc_words(np.arange(1)), config)


def only(rule: str, threshold: float | None = None) -> dict:
    """A repetition config with every rule off except `rule` (at its default or `threshold`)."""
    fields = dict.fromkeys(f for f in GopherRepetitionConfig.model_fields if f.startswith("max_"))
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


@pytest.mark.parametrize("occurrences, share", [("all", 0.2), ("repeats", 0.1)])
def test_duplicate_ngram_reading_is_a_parameter(occurrences, share):
    """90 distinct words, then the first ten again: one 10-gram said twice. Counting every
    occurrence covers 20 of 100 words; counting only the repeat covers 10."""
    words = unique_words(90) + unique_words(10)
    config = GopherRepetitionConfig(dup_ngram_occurrences=occurrences)
    measured = repetition_of(" ".join(words), config)
    for n in range(5, 11):
        assert measured[f"dup_{n}gram_char_fraction"][0] == pytest.approx(share)
    assert GopherRepetitionConfig().dup_ngram_occurrences == "all"  # the paper's reading


def test_duplicate_ngram_repeats_reading_counts_later_copies_once_each():
    words = unique_words(70) + unique_words(10, start=70) * 3  # one 10-gram three times
    config = GopherRepetitionConfig(dup_ngram_occurrences="repeats")
    measured = repetition_of(" ".join(words), config)
    assert measured["dup_10gram_char_fraction"][0] == pytest.approx(20 / 100)
