"""The C4 rules (Raffel et al. 2020, "Colossal Clean Crawled Corpus").

Line rules cut boilerplate out of a page, then page rules judge what is left. First,
citation markers (`[1]`, `[]`, `[edit]`, `[citation needed]`) are deleted from every
line, as the C4 reference (TensorFlow Datasets' c4_utils.clean_page) does before it
judges a line. A line is then kept when it is blank or passes every line rule. Line
rules, in order (a removed line is counted under the first it fails): `word_too_long`,
`javascript`, `policy`, `too_few_words`, `no_terminal_punctuation`, `ellipsis` (a line
ending in "...", which the reference drops although it ends in "."). Page rules, in
order: `empty_after_line_filter`, `lorem_ipsum`, `curly_bracket`, `sentence_count`.

Deliberate differences from the reference, each for a reason:
- blank lines are kept (they hold no content, but keep paragraph structure for the
  Gopher paragraph rules and for readers); runs of them become one;
- kept lines keep their indentation (code blocks and verse keep their shape); the
  reference strips every line;
- `”` also ends a line (the reference predates curly quotes in normalised text);
- the page rules (lorem ipsum, `{`) look at the whole page, not only at lines that
  survived the line rules: a page with code in it is dropped even when the code lines
  would have been cut;
- the order of the line rules only decides which rule a removed line is counted under.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curation.config import StrictModel
from curation.heuristics.pieces import (
    Pieces,
    per_doc_sum,
    split_lines,
    split_words,
)
from curation.heuristics.rules import Rule, bound

# A sentence ends with terminal punctuation (optionally closed by quotes or a bracket)
# followed by whitespace or the end of the text: "3.5" does not end one ("e.g. " does).
SENTENCE_END = r"[.!?]+[\"'”’)]*(\s|$)"
BLANK_LINE_RUN = r"\n[ \t\r\f\v]*\n([ \t\r\f\v]*\n)+"
CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
ELLIPSIS = "..."


class C4Config(StrictModel):
    """Each rule is on with the C4 default; None (or false) switches it off."""

    terminal_punctuation: tuple[str, ...] | None = Field((".", "!", "?", '"', "”"), min_length=1)
    min_line_words: int | None = Field(3, ge=1)
    max_word_chars: int | None = Field(1000, ge=1)
    drop_javascript_lines: bool = True
    policy_phrases: tuple[str, ...] | None = Field(
        (
            "terms of use",
            "privacy policy",
            "cookie policy",
            "uses cookies",
            "use of cookies",
            "use cookies",
        ),
        min_length=1,
    )
    remove_citations: bool = True
    drop_ellipsis_lines: bool = True
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True
    min_sentences: int | None = Field(5, ge=1)

    def filters_lines(self) -> bool:
        return (
            self.terminal_punctuation is not None
            or self.min_line_words is not None
            or self.max_word_chars is not None
            or self.drop_javascript_lines
            or self.policy_phrases is not None
            or self.remove_citations
            or self.drop_ellipsis_lines
        )


@dataclass(frozen=True)
class LineFilterResult:
    """The filtered texts and, per document, what the line rules took out."""

    texts: pa.Array
    citations_removed: np.ndarray
    lines_removed: np.ndarray
    chars_removed: np.ndarray
    lines_removed_by_rule: dict[str, np.ndarray]


def _line_rule_failures(config: C4Config, lines: Pieces) -> dict[str, np.ndarray]:
    """Per line and line rule (in order): does the stripped line fail it?"""
    stripped = pc.utf8_trim_whitespace(lines.values)
    lowered = pc.utf8_lower(stripped)
    words = split_words(stripped)  # a word's `doc` is its line
    failures: dict[str, np.ndarray] = {}
    if config.max_word_chars is not None:
        too_long = words.lengths() > config.max_word_chars
        failures["word_too_long"] = per_doc_sum(words, too_long.astype(np.float64)) > 0
    if config.drop_javascript_lines:
        failures["javascript"] = np.asarray(pc.match_substring(lowered, "javascript"))
    if config.policy_phrases is not None:
        hits = [np.asarray(pc.match_substring(lowered, p.lower())) for p in config.policy_phrases]
        failures["policy"] = np.logical_or.reduce(hits)
    if config.min_line_words is not None:
        failures["too_few_words"] = per_doc_sum(words) < config.min_line_words
    if config.terminal_punctuation is not None:
        ends = [np.asarray(pc.ends_with(stripped, end)) for end in config.terminal_punctuation]
        failures["no_terminal_punctuation"] = ~np.logical_or.reduce(ends)
    if config.drop_ellipsis_lines:
        failures["ellipsis"] = np.asarray(pc.ends_with(stripped, ELLIPSIS))
    return failures


def _delete_citations(lines: Pieces) -> tuple[Pieces, np.ndarray]:
    """Lines with citation markers deleted, and per document how many were. Only lines
    with a "[" are searched: the regular expression is the costly part of the filter."""
    bracket = np.asarray(pc.match_substring(lines.values, "["))
    candidates = lines.values.filter(pa.array(bracket))
    found = np.zeros(len(lines), dtype=np.float64)
    found[bracket] = np.asarray(pc.count_substring_regex(candidates, CITATION))
    citations = per_doc_sum(lines, found).astype(np.int64)
    if not citations.any():
        return lines, citations
    cleaned = pc.replace_substring_regex(candidates, CITATION, "")
    values = pc.replace_with_mask(lines.values, pa.array(bracket), cleaned)
    return Pieces(values, lines.doc, lines.n_docs), citations


def filter_lines(config: C4Config, texts: pa.Array) -> LineFilterResult:
    """Delete citation markers, drop the lines that fail a line rule; runs of blank lines
    left behind become one."""
    lines = split_lines(texts)
    citations = np.zeros(len(texts), dtype=np.int64)
    if config.remove_citations:
        lines, citations = _delete_citations(lines)
    blank = np.asarray(pc.utf8_length(pc.utf8_trim_whitespace(lines.values))) == 0
    removed = np.zeros(len(lines), dtype=bool)
    by_rule = {}
    for rule, fails in _line_rule_failures(config, lines).items():
        newly = fails & ~blank & ~removed
        by_rule[rule] = per_doc_sum(lines, newly.astype(np.float64)).astype(np.int64)
        removed |= newly
    lines_removed = per_doc_sum(lines, removed.astype(np.float64)).astype(np.int64)

    kept = lines.select(~removed)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(kept.doc, minlength=len(texts)))])
    joined = pc.binary_join(
        pa.LargeListArray.from_arrays(offsets, kept.values), pa.scalar("\n", texts.type)
    )
    tidied = pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, BLANK_LINE_RUN, "\n\n"))
    changed = pa.array((lines_removed > 0) | (citations > 0))
    filtered = pc.if_else(changed, tidied, texts)
    chars_removed = np.asarray(pc.utf8_length(texts), dtype=np.int64) - np.asarray(
        pc.utf8_length(filtered), dtype=np.int64
    )
    return LineFilterResult(filtered, citations, lines_removed, chars_removed, by_rule)


def measure(texts: pa.Array) -> dict[str, np.ndarray]:
    """The page measures the C4 page rules bound."""
    return {
        "nonblank_chars": np.asarray(pc.utf8_length(pc.utf8_trim_whitespace(texts)), np.float64),
        "lorem_ipsum": np.asarray(
            pc.count_substring(texts, "lorem ipsum", ignore_case=True), np.float64
        ),
        "curly_brackets": np.asarray(pc.count_substring(texts, "{"), np.float64),
        "sentences": np.asarray(pc.count_substring_regex(texts, SENTENCE_END), np.float64),
    }


def rules(config: C4Config) -> list[Rule]:
    """The C4 page rules in the order they are checked."""

    def switch(on: bool, threshold: int) -> int | None:
        return threshold if on else None

    return [
        *bound(
            "c4.empty_after_line_filter", "nonblank_chars", switch(config.filters_lines(), 1), "min"
        ),
        *bound("c4.lorem_ipsum", "lorem_ipsum", switch(config.drop_lorem_ipsum, 0), "max"),
        *bound("c4.curly_bracket", "curly_brackets", switch(config.drop_curly_bracket, 0), "max"),
        *bound("c4.sentence_count", "sentences", config.min_sentences, "min"),
    ]
