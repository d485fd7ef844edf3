"""The Gopher quality rules (Rae et al. 2021, "Scaling Language Models", Appendix A).

Words are whitespace-separated tokens; lines are the non-blank lines. Rules, in order:
`word_count`, `mean_word_length`, `symbol_word_ratio` (the larger of the '#' and the
ellipsis ratios, since the paper bounds each), `bullet_lines`, `ellipsis_lines`,
`alpha_words`, `stop_words` (how many *distinct* stop words the text uses).
"""

from __future__ import annotations

import string

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.config import StrictModel
from curation.stages.heuristic_rules.pieces import (
    per_doc_sum,
    ratio,
    split_lines,
    split_words,
    stripped_nonblank,
)
from curation.stages.heuristic_rules.rules import Rule, bound

# A line starting with one of these (after indentation) is a bullet point.
BULLET_LINE = r"^[-*•‣⁃◦●○▪▫■□·]"
ELLIPSES = ("...", "…")
# Stripped from a word's ends before it is compared with the stop words.
WORD_EDGE_PUNCTUATION = string.punctuation + "“”‘’«»…"


class GopherQualityConfig(StrictModel):
    """Each threshold is the paper's; None switches that bound off."""

    min_words: int | None = Field(50, ge=0)
    max_words: int | None = Field(100_000, ge=1)
    min_mean_word_length: float | None = Field(3.0, ge=0)
    max_mean_word_length: float | None = Field(10.0, gt=0)
    max_symbol_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_line_fraction: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_line_fraction: float | None = Field(0.3, ge=0, le=1)
    min_alpha_word_fraction: float | None = Field(0.8, ge=0, le=1)
    min_stop_words: int | None = Field(2, ge=0)
    stop_words: tuple[str, ...] = Field(
        ("the", "be", "to", "of", "and", "that", "have", "with"), min_length=1
    )

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> GopherQualityConfig:
        for low, high in (
            ("min_words", "max_words"),
            ("min_mean_word_length", "max_mean_word_length"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} ({lo}) must not exceed {high} ({hi})")
        return self


def _distinct_stop_words(words, stop_words: tuple[str, ...]) -> np.ndarray:
    """Per document: how many different stop words occur (case-insensitive)."""
    vocabulary = sorted({w.lower() for w in stop_words})
    bare = pc.utf8_trim(pc.utf8_lower(words.values), characters=WORD_EDGE_PUNCTUATION)
    index = pc.index_in(bare, value_set=pa.array(vocabulary, type=bare.type))
    found = np.asarray(pc.fill_null(index, -1), dtype=np.int64)
    hit = found >= 0
    pairs = np.unique(words.doc[hit] * len(vocabulary) + found[hit])
    return np.bincount(pairs // len(vocabulary), minlength=words.n_docs).astype(np.float64)


def measure(texts: pa.Array, stop_words: tuple[str, ...]) -> dict[str, np.ndarray]:
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
        "stop_words": _distinct_stop_words(words, stop_words),
    }


def rules(config: GopherQualityConfig) -> list[Rule]:
    """The Gopher quality rules in the order they are checked."""
    name = "gopher_quality."
    return [
        *bound(name + "word_count", "words", config.min_words, "min"),
        *bound(name + "word_count", "words", config.max_words, "max"),
        *bound(name + "mean_word_length", "mean_word_length", config.min_mean_word_length, "min"),
        *bound(name + "mean_word_length", "mean_word_length", config.max_mean_word_length, "max"),
        *bound(
            name + "symbol_word_ratio", "symbol_word_ratio", config.max_symbol_word_ratio, "max"
        ),
        *bound(
            name + "bullet_lines", "bullet_line_fraction", config.max_bullet_line_fraction, "max"
        ),
        *bound(
            name + "ellipsis_lines",
            "ellipsis_line_fraction",
            config.max_ellipsis_line_fraction,
            "max",
        ),
        *bound(name + "alpha_words", "alpha_word_fraction", config.min_alpha_word_fraction, "min"),
        *bound(name + "stop_words", "stop_words", config.min_stop_words, "min"),
    ]
