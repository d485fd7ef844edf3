"""The Gopher repetition rules (Rae et al. 2021, Appendix A, Table A1).

Definitions used here:
- duplicate line / paragraph fraction: of the non-blank lines (paragraphs: text between
  blank lines), the share that repeat an earlier one exactly (after trimming); the
  character fraction is their characters over all trimmed lines' (paragraphs') characters.
- top n-gram character share (n = 2, 3, 4): the characters covered by the occurrences of
  the document's most frequent word n-gram, over all word characters (n-grams are of
  whitespace-separated words; whitespace is not counted). Only an n-gram
  seen at least twice counts (a single occurrence is not repetition); ties go to the
  n-gram that occurs first. Overlapping occurrences count each character once.
- duplicate n-gram character share (n = 5..10): the characters covered by the
  occurrences of the n-grams that occur more than once, each character counted once.
  Which occurrences is `dup_ngram_occurrences`: "all" (every occurrence, the first
  included) or "repeats" (only those after the first). See GopherRepetitionConfig.

N-grams are compared exactly (by their words' ids), for all documents of a partition at
once; a hash table over those keys finds the repeats.
Rules, in order: `dup_line_fraction`, `dup_paragraph_fraction`, `dup_line_char_fraction`,
`dup_paragraph_char_fraction`, `top_{2,3,4}gram_char_fraction`,
`dup_{5..10}gram_char_fraction`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, create_model

from curation.config import StrictModel
from curation.hashing import splitmix64
from curation.heuristics.layout import DocWords, TextLayout
from curation.heuristics.pieces import Pieces, per_doc_sum, ratio
from curation.heuristics.rules import Rule, bound

TOP_NGRAM_SIZES = (2, 3, 4)
DUP_NGRAM_SIZES = (5, 6, 7, 8, 9, 10)


Share = Annotated[float | None, Field(ge=0, le=1)]  # a bound on a share; None: rule off

# The measures the rules bound, in the order documents are checked, with the thresholds of
# the paper's Table A1; the config has a `max_<measure>` field for each.
THRESHOLDS: dict[str, float] = {
    "dup_line_fraction": 0.30,
    "dup_paragraph_fraction": 0.30,
    "dup_line_char_fraction": 0.20,
    "dup_paragraph_char_fraction": 0.20,
    **{f"top_{n}gram_char_fraction": t for n, t in zip(TOP_NGRAM_SIZES, (0.20, 0.18, 0.16),
                                                        strict=True)},
    **{f"dup_{n}gram_char_fraction": t for n, t in zip(
        DUP_NGRAM_SIZES, (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True)},
}


class _RepetitionOptions(StrictModel):
    dup_ngram_occurrences: Literal["all", "repeats"] = "all"

    def top_ngram_threshold(self, n: int) -> float | None:
        return getattr(self, f"max_top_{n}gram_char_fraction")

    def dup_ngram_threshold(self, n: int) -> float | None:
        return getattr(self, f"max_dup_{n}gram_char_fraction")


GopherRepetitionConfig = create_model(
    "GopherRepetitionConfig", __base__=_RepetitionOptions, __module__=__name__,
    **{f"max_{measure}": (Share, limit) for measure, limit in THRESHOLDS.items()})
GopherRepetitionConfig.__doc__ = """Each threshold (`max_<measure>`, THRESHOLDS) is the
paper's; None switches that rule off.

`dup_ngram_occurrences` — which characters the duplicate n-gram shares count:
- "all" (the default): every occurrence of a repeated n-gram, the first included.
  This is the reading the paper's thresholds were set for. Appendix A of Rae et al.
  defines the measure as the fraction of characters "contained within all duplicate
  n-grams", taking care not to count characters of overlapping n-grams twice: every
  occurrence of an n-gram that occurs more than once is a duplicate n-gram. The
  sibling measure for n = 2..4 counts every occurrence of the most frequent n-gram,
  and the thresholds of both families form one series (0.20, 0.18, 0.16 for top
  2..4-grams, then 0.15 down to 0.10 for duplicate 5..10-grams), i.e. one scale.
  Dolma reads it the same way.
- "repeats": only the occurrences after the first, as datatrove's GopherRepetition
  filter (and so FineWeb) computes it; a passage said twice scores half as much, so
  with the paper's thresholds this reading removes fewer documents.
"""


def _duplicate_pieces(pieces: Pieces) -> dict[str, np.ndarray]:
    """Share of (trimmed, non-blank) pieces, and of their characters, that repeat an
    earlier piece exactly."""
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
    counts the n-grams starting where the previous size found two repeats in a row: after
    the first few sizes almost nothing is left to count. An n-gram is named exactly by two
    integers, its first (n-1)-gram's group and its last word's group (a word's group
    already holds its document), and counted in a hash table (pandas.factorize), whose
    codes follow first occurrence, so ties between equally frequent n-grams go to the one
    that occurs first.
    """

    def __init__(self, words: DocWords, word_chars: np.ndarray):
        self.words = words
        self.word_chars = word_chars.astype(np.float64)
        self.total_chars = self._per_doc(self.word_chars)
        self.chars_before = np.concatenate([[0], np.cumsum(word_chars)])
        self.n = 1
        self.starts = np.arange(len(words))  # where the counted n-grams start
        self._count(words.doc.astype(np.int64) * (len(words.distinct) + 1) + words.ids)
        self._group_at = self.group.copy()  # per word: the group of the n-gram starting there

    def _count(self, key: np.ndarray) -> None:
        """Group the n-grams at `starts` by `key` and count each group. The keys are
        spread by splitmix64 (a bijection, so still exact): pandas' hash table wants
        uniform bits."""
        self.group, _ = pd.factorize(splitmix64(key))
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
        key = self._group_at[candidate] * (len(self.words.distinct) + 1) + self.words.ids[
            candidate + n]
        self.starts, self.n = candidate, n + 1
        self._count(key)
        self._group_at[candidate] = self.group

    def _covered_char_share(self, starts: np.ndarray) -> np.ndarray:
        """Per document: share of word characters under the n-grams starting at `starts`
        (ascending): each n-gram adds the characters up to the next one's start."""
        ends = starts + self.n
        ends[:-1] = np.minimum(ends[:-1], starts[1:])
        chars = (self.chars_before[ends] - self.chars_before[starts]).astype(np.float64)
        covered = np.bincount(self.words.doc[starts], weights=chars, minlength=self.words.n_docs)
        return ratio(covered, self.total_chars)

    def _per_doc(self, weights: np.ndarray) -> np.ndarray:
        return np.bincount(self.words.doc, weights=weights, minlength=self.words.n_docs)

    def duplicate_share(self, occurrences: str) -> np.ndarray:
        """Share of characters under repeated n-grams: under all their occurrences, or
        (`occurrences="repeats"`) under those after the first."""
        counted = self.repeated.copy()
        if occurrences == "repeats":
            # Codes number groups in order of first occurrence: a group's first n-gram
            # is the one whose code exceeds every code before it.
            first = np.ones(len(self.group), dtype=bool)
            first[1:] = self.group[1:] > np.maximum.accumulate(self.group)[:-1]
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


def measure(layout: TextLayout, words: DocWords, config) -> dict[str, np.ndarray]:
    """The measures the switched-on Gopher repetition rules bound, for the documents of
    `words` (GopherRepetitionConfig `config`)."""
    lines = _duplicate_pieces(layout.trimmed_lines(words.docs))
    paragraphs = _duplicate_pieces(layout.trimmed_paragraphs(words.docs))
    measures = {
        "dup_line_fraction": lines["fraction"],
        "dup_line_char_fraction": lines["char_fraction"],
        "dup_paragraph_fraction": paragraphs["fraction"],
        "dup_paragraph_char_fraction": paragraphs["char_fraction"],
    }
    wanted = {n for n in TOP_NGRAM_SIZES if config.top_ngram_threshold(n) is not None}
    wanted |= {n for n in DUP_NGRAM_SIZES if config.dup_ngram_threshold(n) is not None}
    ngrams = _RepeatedNgrams(words, layout.word_chars[words.index])
    while wanted and ngrams.n < max(wanted):
        ngrams.grow()
        if ngrams.n in TOP_NGRAM_SIZES and ngrams.n in wanted:
            measures[f"top_{ngrams.n}gram_char_fraction"] = ngrams.top_share()
        elif ngrams.n in wanted:
            measures[f"dup_{ngrams.n}gram_char_fraction"] = ngrams.duplicate_share(
                config.dup_ngram_occurrences
            )
    return measures


def rules(config) -> list[Rule]:
    """The Gopher repetition rules (of a GopherRepetitionConfig) in the order they are
    checked."""
    return [rule for measure in THRESHOLDS
            for rule in bound(f"gopher_repetition.{measure}", measure,
                              getattr(config, f"max_{measure}"), "max")]
