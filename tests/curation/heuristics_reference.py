"""The heuristics stage's measures as they were before they moved to byte layouts
(curation/heuristics/layout.py): Arrow kernels over split pieces. The reference that
test_heuristics_equivalence.py holds the stage to: same decisions, reasons and details."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashing import GOLDEN_GAMMA, splitmix64
from curation.heuristics import c4 as c4_rules
from curation.heuristics import gopher_quality as quality_rules
from curation.heuristics import gopher_repetition as repetition_rules
from curation.heuristics.c4 import C4Config
from curation.heuristics.gopher_quality import (
    ELLIPSES,
    LANGUAGE_SEPARATOR,
    WORD_EDGE_PUNCTUATION,
    GopherQualityConfig,
    _stop_word_lists,
    document_languages,
)
from curation.heuristics.gopher_repetition import DUP_NGRAM_SIZES, TOP_NGRAM_SIZES
from curation.heuristics.rules import NOT_FAILED, Rule, first_failures

PARAGRAPH_BREAK = r"\n[ \t\r\f\v]*\n"
BULLET_LINE = r"^[-*•‣⁃◦●○▪▫■□·]"
SENTENCE_END = c4_rules.SENTENCE_END
BLANK_LINE_RUN = c4_rules.BLANK_LINE_RUN
CITATION = c4_rules.CITATION
ELLIPSIS = "..."


@dataclass(frozen=True)
class Pieces:
    """Pieces of `n_docs` documents: `values[i]` belongs to document `doc[i]` (ascending)."""

    values: pa.Array
    doc: np.ndarray
    n_docs: int

    def __len__(self) -> int:
        return len(self.doc)

    def lengths(self) -> np.ndarray:
        """Characters (code points) per piece."""
        return np.asarray(pc.utf8_length(self.values), dtype=np.int64)

    def select(self, mask: np.ndarray) -> Pieces:
        return Pieces(self.values.filter(pa.array(mask)), self.doc[mask], self.n_docs)

    def ids(self) -> np.ndarray:
        """An integer per piece, equal for equal pieces (across the whole partition)."""
        encoded = pc.dictionary_encode(self.values)
        return np.asarray(encoded.indices, dtype=np.int64)

    def first_occurrence(self) -> np.ndarray:
        """True for a piece whose exact text has not occurred earlier in its document."""
        key = self.doc * (len(self) + 1) + self.ids()
        _, first = np.unique(key, return_index=True)
        mask = np.zeros(len(self), dtype=bool)
        mask[first] = True
        return mask


def _from_lists(lists: pa.ListArray, n_docs: int) -> Pieces:
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    doc = np.repeat(np.arange(n_docs), np.diff(offsets))
    return Pieces(lists.flatten(), doc, n_docs)


def split_words(texts: pa.Array) -> Pieces:
    """Whitespace-separated words; a document of only whitespace has none."""
    pieces = _from_lists(pc.utf8_split_whitespace(texts), len(texts))
    return pieces.select(np.asarray(pc.utf8_length(pieces.values)) > 0)


def split_lines(texts: pa.Array) -> Pieces:
    """Every line (split on '\\n'), blank ones included, untrimmed."""
    return _from_lists(pc.split_pattern(texts, "\n"), len(texts))


def split_paragraphs(texts: pa.Array) -> Pieces:
    """Paragraphs: text between blank lines."""
    return _from_lists(pc.split_pattern_regex(texts, PARAGRAPH_BREAK), len(texts))


def stripped_nonblank(pieces: Pieces) -> Pieces:
    """Pieces with surrounding whitespace removed, blank ones dropped."""
    stripped = Pieces(pc.utf8_trim_whitespace(pieces.values), pieces.doc, pieces.n_docs)
    return stripped.select(stripped.lengths() > 0)


def per_doc_sum(pieces: Pieces, weights: np.ndarray | None = None) -> np.ndarray:
    """Per document: the number of pieces, or the sum of `weights` over its pieces."""
    return np.bincount(pieces.doc, weights=weights, minlength=pieces.n_docs).astype(np.float64)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (nothing to measure)."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


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


def c4_measure(texts: pa.Array) -> dict[str, np.ndarray]:
    """The page measures the C4 page rules bound."""
    return {
        "nonblank_chars": np.asarray(pc.utf8_length(pc.utf8_trim_whitespace(texts)), np.float64),
        "lorem_ipsum": np.asarray(
            pc.count_substring(texts, "lorem ipsum", ignore_case=True), np.float64
        ),
        "curly_brackets": np.asarray(pc.count_substring(texts, "{"), np.float64),
        "sentences": np.asarray(pc.count_substring_regex(texts, SENTENCE_END), np.float64),
    }


def _distinct_stop_words(
    words, langs: np.ndarray, english: tuple[str, ...], by_language: bool
) -> np.ndarray:
    """Per document: how many different stop words of its language occur
    (case-insensitive); NaN for a document whose language has no list."""
    lists = _stop_word_lists(langs, english, by_language)
    bare = pc.utf8_trim(pc.utf8_lower(words.values), characters=WORD_EDGE_PUNCTUATION)
    present = set(langs)
    if len(present) == 1 and present <= set(lists):  # one language: look words up as they are
        vocabulary = sorted(lists[present.pop()])
        keys = bare
    else:
        vocabulary = sorted(lang + LANGUAGE_SEPARATOR + w for lang, ws in lists.items() for w in ws)
        word_lang = pa.array(langs[words.doc], type=bare.type)
        separator = pa.scalar(LANGUAGE_SEPARATOR, bare.type)
        keys = pc.binary_join_element_wise(word_lang, bare, separator)
    index = pc.index_in(keys, value_set=pa.array(vocabulary, type=bare.type))
    found = np.asarray(pc.fill_null(index, -1), dtype=np.int64)
    hit = found >= 0
    pairs = np.unique(words.doc[hit] * len(vocabulary) + found[hit])
    counts = np.bincount(pairs // len(vocabulary), minlength=words.n_docs).astype(np.float64)
    counts[~np.isin(langs, list(lists))] = np.nan
    return counts


def quality_measure(
    texts: pa.Array, config: GopherQualityConfig, langs: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The document measures the Gopher quality rules bound."""
    words = split_words(texts)
    n_words = per_doc_sum(words)
    word_chars = per_doc_sum(words, words.lengths().astype(np.float64))
    has_letter = np.asarray(pc.match_substring_regex(words.values, r"\pL"), dtype=np.float64)

    hashes = np.asarray(pc.count_substring(texts, "#"), dtype=np.float64)
    ellipses = sum(np.asarray(pc.count_substring(texts, e), dtype=np.float64) for e in ELLIPSES)

    lines = stripped_nonblank(split_lines(texts))
    n_lines = per_doc_sum(lines)
    bullet = np.asarray(pc.match_substring_regex(lines.values, BULLET_LINE), dtype=np.float64)
    ends_in_ellipsis = np.logical_or.reduce(
        [np.asarray(pc.ends_with(lines.values, e)) for e in ELLIPSES]
    ).astype(np.float64)

    return {
        "words": n_words,
        "mean_word_length": ratio(word_chars, n_words),
        "symbol_word_ratio": np.maximum(ratio(hashes, n_words), ratio(ellipses, n_words)),
        "bullet_line_fraction": ratio(per_doc_sum(lines, bullet), n_lines),
        "ellipsis_line_fraction": ratio(per_doc_sum(lines, ends_in_ellipsis), n_lines),
        "alpha_word_fraction": ratio(per_doc_sum(words, has_letter), n_words),
        "stop_words": _distinct_stop_words(
            words,
            document_languages(langs, len(texts), config.stop_words_by_language),
            config.stop_words,
            config.stop_words_by_language,
        ),
    }


def _duplicate_pieces(pieces: Pieces) -> dict[str, np.ndarray]:
    """Share of pieces (and of their characters) that repeat an earlier piece exactly."""
    pieces = stripped_nonblank(pieces)
    lengths = pieces.lengths().astype(np.float64)
    repeat = ~pieces.first_occurrence()
    return {
        "fraction": ratio(per_doc_sum(pieces, repeat.astype(np.float64)), per_doc_sum(pieces)),
        "char_fraction": ratio(
            per_doc_sum(pieces, np.where(repeat, lengths, 0.0)), per_doc_sum(pieces, lengths)
        ),
    }


class _RepeatedNgrams:
    """The repeated word n-grams of a partition's documents, for n = 1, 2, ... in turn.

    An n-gram can only repeat if both (n-1)-grams inside it repeat, so each size only
    hashes and counts the n-grams starting where the previous size found two repeats in a
    row: after the first few sizes almost nothing is left to count. Counting is a hash
    table (pandas.factorize), whose codes follow first occurrence, so ties between equally
    frequent n-grams go to the one that occurs first.
    """

    def __init__(self, words: Pieces):
        self.words = words
        self.word_chars = words.lengths().astype(np.float64)
        self.total_chars = per_doc_sum(words, self.word_chars)
        self.word_hash = splitmix64(words.ids() + 1)
        self.doc_salt = splitmix64(words.doc.astype(np.uint64) + GOLDEN_GAMMA)
        self.n = 1
        self.starts = np.arange(len(words))  # where the counted n-grams start
        self._hash = self.word_hash.copy()  # their hashes (valid at `starts`)
        self._count()

    def _count(self) -> None:
        """Group the n-grams at `starts` (within each document) and count each group."""
        key = self._hash[self.starts] ^ self.doc_salt[self.starts]
        self.group, _ = pd.factorize(key)
        self.counts = np.bincount(self.group)
        self.repeated = self.counts[self.group] > 1

    def grow(self) -> None:
        """From n-grams to (n+1)-grams, keeping only those that can repeat."""
        doc, n = self.words.doc, self.n
        repeated_at = np.zeros(len(doc) + 1, dtype=bool)
        repeated_at[self.starts[self.repeated]] = True
        candidate = self.starts[self.repeated]
        candidate = candidate[candidate + n < len(doc)]
        candidate = candidate[repeated_at[candidate + 1] & (doc[candidate] == doc[candidate + n])]
        with np.errstate(over="ignore"):
            self._hash[candidate] = splitmix64(
                self._hash[candidate] * np.uint64(0x100000001B3) ^ self.word_hash[candidate + n]
            )
        self.starts, self.n = candidate, n + 1
        self._count()

    def _covered_char_share(self, starts: np.ndarray) -> np.ndarray:
        """Per document: share of word characters under the n-grams starting at `starts`."""
        size = len(self.words) + 1
        depth = np.cumsum(
            np.bincount(starts, minlength=size) - np.bincount(starts + self.n, minlength=size)
        )[:-1]
        covered = np.where(depth > 0, self.word_chars, 0.0)
        return ratio(per_doc_sum(self.words, covered), self.total_chars)

    def duplicate_share(self, occurrences: str) -> np.ndarray:
        """Share of characters under repeated n-grams: under all their occurrences, or
        (`occurrences="repeats"`) under those after the first."""
        counted = self.repeated.copy()
        if occurrences == "repeats":
            _, first = np.unique(self.group, return_index=True)  # `starts` ascend
            counted[first] = False
        return self._covered_char_share(self.starts[counted])

    def top_share(self) -> np.ndarray:
        groups = np.flatnonzero(self.counts > 1)  # codes: in order of first occurrence
        group_doc = np.empty(len(self.counts), dtype=np.int64)
        group_doc[self.group] = self.words.doc[self.starts]
        # Per document, its repeated groups by count (descending), then first occurrence.
        order = groups[np.lexsort((groups, -self.counts[groups], group_doc[groups]))]
        leader = order[np.diff(group_doc[order], prepend=-1) != 0]
        is_top = np.zeros(len(self.counts), dtype=bool)
        is_top[leader] = True
        return self._covered_char_share(self.starts[is_top[self.group]])


def repetition_measure(texts: pa.Array, config) -> dict[str, np.ndarray]:
    """The document measures the switched-on Gopher repetition rules bound."""
    lines = _duplicate_pieces(split_lines(texts))
    paragraphs = _duplicate_pieces(split_paragraphs(texts))
    measures = {
        "dup_line_fraction": lines["fraction"],
        "dup_line_char_fraction": lines["char_fraction"],
        "dup_paragraph_fraction": paragraphs["fraction"],
        "dup_paragraph_char_fraction": paragraphs["char_fraction"],
    }
    wanted = {n for n in TOP_NGRAM_SIZES if config.top_ngram_threshold(n) is not None}
    wanted |= {n for n in DUP_NGRAM_SIZES if config.dup_ngram_threshold(n) is not None}
    ngrams = _RepeatedNgrams(split_words(texts))
    while wanted and ngrams.n < max(wanted):
        ngrams.grow()
        if ngrams.n in TOP_NGRAM_SIZES and ngrams.n in wanted:
            measures[f"top_{ngrams.n}gram_char_fraction"] = ngrams.top_share()
        elif ngrams.n in wanted:
            measures[f"dup_{ngrams.n}gram_char_fraction"] = ngrams.duplicate_share(
                config.dup_ngram_occurrences
            )
    return measures


@dataclass(frozen=True)
class Judged:
    """What the stage decided about each document: the line filter's result (or None),
    every rule switched on, the measures they bound, and each document's first failure."""

    lines_cut: LineFilterResult | None
    rules: list[Rule]
    measures: dict[str, np.ndarray]
    failed: np.ndarray


def judge(config, entered: pa.Array, langs=None) -> Judged:
    """The stage's decisions as its `run` made them (HeuristicsConfig `config`)."""
    texts, lines_cut = entered, None
    if config.c4 and config.c4.filters_lines():
        lines_cut = filter_lines(config.c4, entered)
        texts = lines_cut.texts
    measures: dict[str, np.ndarray] = {}
    rules: list[Rule] = []
    if config.c4:
        measures.update(c4_measure(texts))
        rules += c4_rules.rules(config.c4)
    if config.gopher_quality:
        measures.update(quality_measure(entered, config.gopher_quality, langs))
        rules += quality_rules.rules(config.gopher_quality)
    if config.gopher_repetition:
        passing = first_failures(rules, measures, np.ones(len(entered), bool)) == NOT_FAILED
        rows = np.flatnonzero(passing)
        subset = repetition_measure(entered.take(rows), config.gopher_repetition)
        for key, values in subset.items():
            measures[key] = np.full(len(entered), np.nan)
            measures[key][rows] = values
        rules += repetition_rules.rules(config.gopher_repetition)
    failed = first_failures(rules, measures, np.ones(len(entered), bool))
    return Judged(lines_cut, rules, measures, failed)
