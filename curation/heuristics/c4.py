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
from curation.heuristics.layout import TextLayout
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


def _regex_literal(text: str) -> str:
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}" else c for c in text)


def _lines_containing(layout: TextLayout, phrases: list[str]) -> np.ndarray:
    """Per line: does its trimmed, lower-cased text contain one of `phrases`? Only the
    lines of documents whose lower-cased text holds one are looked at: a line's lower
    case is a piece of its document's (lower-casing maps each character on its own)."""
    found = np.zeros(layout.n_lines, dtype=bool)
    if any("\n" in p for p in phrases):  # never inside a line; dropped from the search
        phrases = [p for p in phrases if "\n" not in p]
    if not phrases:
        return found
    lowered = pc.utf8_lower(layout.texts)
    pattern = "|".join(_regex_literal(p) for p in phrases)
    docs = np.flatnonzero(np.asarray(pc.match_substring_regex(lowered, pattern)))
    if not len(docs):
        return found
    lines = np.flatnonzero(np.isin(layout.line_doc, docs))
    text = pc.utf8_lower(pc.utf8_trim_whitespace(layout.lines(lines)))
    found[lines] = np.logical_or.reduce([np.asarray(pc.match_substring(text, p))
                                         for p in phrases])
    return found


def _line_rule_failures(config: C4Config, layout: TextLayout) -> dict[str, np.ndarray]:
    """Per line and line rule (in order): does the trimmed line fail it? (Blank lines
    fail none; what they get here does not matter.)"""
    failures: dict[str, np.ndarray] = {}
    if config.max_word_chars is not None:
        failures["word_too_long"] = layout.any_word_per_line(
            layout.word_chars > config.max_word_chars)
    if config.drop_javascript_lines:
        failures["javascript"] = _lines_containing(layout, ["javascript"])
    if config.policy_phrases is not None:
        failures["policy"] = _lines_containing(layout, [p.lower() for p in config.policy_phrases])
    if config.min_line_words is not None:
        failures["too_few_words"] = layout.line_words < config.min_line_words
    if config.terminal_punctuation is not None:
        ends = [layout.line_ends_with(end) for end in config.terminal_punctuation]
        failures["no_terminal_punctuation"] = ~np.logical_or.reduce(ends)
    if config.drop_ellipsis_lines:
        failures["ellipsis"] = layout.line_ends_with(ELLIPSIS)
    return failures


@dataclass(frozen=True)
class _Citations:
    """Per document how many citation markers were deleted; the lines that held any
    (ascending) and their text without them."""

    per_doc: np.ndarray
    lines: np.ndarray
    cleaned: pa.Array


def _delete_citations(layout: TextLayout) -> _Citations:
    """Only lines with a "[" are searched: the regular expression is the costly part."""
    candidates = layout.lines_holding(ord("["))
    text = layout.lines(candidates)
    found = np.asarray(pc.count_substring_regex(text, CITATION), dtype=np.int64)
    per_doc = np.bincount(layout.line_doc[candidates], weights=found.astype(np.float64),
                          minlength=layout.n_docs).astype(np.int64)
    hit = found > 0
    cleaned = pc.replace_substring_regex(text.filter(pa.array(hit)), CITATION, "")
    return _Citations(per_doc, candidates[hit], cleaned)


def _judge_lines(config: C4Config, layout: TextLayout, cited: _Citations | None):
    """Per line: blank, and which rules it fails; lines whose citations were deleted are
    judged on their cleaned text."""
    blank = layout.line_words == 0
    failures = _line_rule_failures(config, layout)
    if cited is not None and len(cited.lines):
        cleaned = TextLayout(cited.cleaned)  # one document per cleaned line
        blank[cited.lines] = cleaned.line_words == 0
        for rule, fails in _line_rule_failures(config, cleaned).items():
            failures[rule][cited.lines] = fails
    return blank, failures


def _rejoin(layout: TextLayout, keep: np.ndarray, changed: np.ndarray,
            cited: _Citations | None) -> pa.Array:
    """The changed documents' kept lines joined again, runs of blank lines made one,
    trimmed."""
    lines = np.flatnonzero(keep & changed[layout.line_doc])
    text = layout.lines(lines)
    if cited is not None and len(cited.lines):
        swap = np.isin(lines, cited.lines)
        text = pc.replace_with_mask(
            text, pa.array(swap), cited.cleaned.filter(pa.array(np.isin(cited.lines, lines))))
    per_doc = np.bincount(layout.line_doc[lines], minlength=layout.n_docs)[changed]
    offsets = np.concatenate([[0], np.cumsum(per_doc)])
    joined = pc.binary_join(pa.LargeListArray.from_arrays(offsets, text),
                            pa.scalar("\n", pa.large_string()))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, BLANK_LINE_RUN, "\n\n"))


def filter_lines(config: C4Config, layout: TextLayout) -> LineFilterResult:
    """Delete citation markers, drop the lines that fail a line rule; runs of blank lines
    left behind become one."""
    texts = layout.texts
    cited = _delete_citations(layout) if config.remove_citations else None
    citations = cited.per_doc if cited is not None else np.zeros(len(texts), dtype=np.int64)
    blank, failures = _judge_lines(config, layout, cited)
    removed = np.zeros(layout.n_lines, dtype=bool)
    by_rule = {}
    for rule, fails in failures.items():
        newly = fails & ~blank & ~removed
        by_rule[rule] = layout.per_doc("line", where=newly).astype(np.int64)
        removed |= newly
    lines_removed = layout.per_doc("line", where=removed).astype(np.int64)

    changed = (lines_removed > 0) | (citations > 0)
    chars_removed = np.zeros(len(texts), dtype=np.int64)
    filtered = texts
    if changed.any():
        tidied = _rejoin(layout, ~removed, changed, cited)
        filtered = pc.replace_with_mask(texts, pa.array(changed), tidied)
        chars_removed[changed] = np.asarray(
            pc.utf8_length(texts.filter(pa.array(changed))), dtype=np.int64
        ) - np.asarray(pc.utf8_length(tidied), dtype=np.int64)
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
