"""The Gopher quality rules (Rae et al. 2021, "Scaling Language Models", Appendix A).

Words are whitespace-separated tokens; lines are the non-blank lines. Rules, in order:
`word_count`, `mean_word_length`, `symbol_word_ratio` (the larger of the '#' and the
ellipsis ratios, since the paper bounds each), `bullet_lines`, `ellipsis_lines`,
`alpha_words`, `stop_words` (how many *distinct* stop words the text uses).

Stop words are those of the document's language: the `lang` the language stage detected.
English, and every document when no language is known, uses `stop_words` (the paper's
eight); any other language uses the stopwords-iso list of that language (the
`stopwordsiso` package). A language with no list there is not judged by this rule.
The paper's threshold of two distinct stop words was set for its eight English words;
the stopwords-iso lists are longer, so for other languages the rule is more lenient:
it still removes word salad, keyword lists and tables, which hold no function words.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import stopwordsiso
from pydantic import Field, model_validator

from curation.config import StrictModel
from curation.heuristics.layout import DocWords, TextLayout
from curation.heuristics.pieces import ratio
from curation.heuristics.rules import Rule, bound

# A line starting with one of these (after indentation) is a bullet point.
BULLETS = "-*•‣⁃◦●○▪▫■□·"
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
    # Count the stop words of each document's detected language (see the module
    # docstring); false: every document against `stop_words`, as the paper did.
    stop_words_by_language: bool = True

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


ENGLISH = "en"
LANGUAGE_SEPARATOR = "\x00"  # joins a language code and a word into one lookup key


@cache
def stop_word_list(lang: str) -> frozenset[str] | None:
    """stopwords-iso's list for a language code (langdetect's `zh-cn` is `zh`), or None."""
    base = lang.split("-")[0].lower()
    return frozenset(stopwordsiso.stopwords(base)) if stopwordsiso.has_lang(base) else None


def _stop_word_lists(
    langs: np.ndarray, english: tuple[str, ...], by_language: bool
) -> dict[str, frozenset[str]]:
    """The list each language present uses; a language without one is left out."""
    lists = {ENGLISH: frozenset(w.lower() for w in english)}
    if by_language:
        for lang in set(langs) - {ENGLISH}:
            found = stop_word_list(lang)
            if found is not None:
                lists[lang] = found
    return lists


def distinct_stop_words(
    words: DocWords, langs: np.ndarray, config: GopherQualityConfig
) -> np.ndarray:
    """Per document of `words`: how many different stop words of its language (`langs`,
    per document) occur (case-insensitive); NaN for a document whose language has no
    list. Each distinct word is lower-cased, trimmed and looked up once."""
    lists = _stop_word_lists(langs, config.stop_words, config.stop_words_by_language)
    word_ids = words.ids
    bare = pc.utf8_trim(pc.utf8_lower(words.distinct), characters=WORD_EDGE_PUNCTUATION)
    vocabulary = sorted(lang + LANGUAGE_SEPARATOR + w for lang, ws in lists.items() for w in ws)
    found = np.full(len(words), -1, dtype=np.int64)
    doc_lang, names = pd.factorize(langs)
    word_lang = doc_lang[words.doc]
    for lang in lists:
        in_lang = word_lang == list(names).index(lang) if lang in names else np.zeros(0, bool)
        if not in_lang.any():
            continue
        # The distinct words this language's documents use, and each word's among them.
        code, used = (pd.factorize(word_ids[in_lang]) if len(lists) > 1
                      else (word_ids[in_lang], np.arange(len(bare))))
        keys = pc.binary_join_element_wise(pa.scalar(lang, bare.type), bare.take(pa.array(used)),
                                           pa.scalar(LANGUAGE_SEPARATOR, bare.type))
        index = pc.index_in(keys, value_set=pa.array(vocabulary, type=bare.type))
        found[in_lang] = np.asarray(pc.fill_null(index, -1), dtype=np.int64)[code]
    hit = found >= 0
    pairs = pd.unique(words.doc[hit] * len(vocabulary) + found[hit])
    counts = np.bincount(pairs // len(vocabulary), minlength=words.n_docs).astype(np.float64)
    counts[~np.isin(langs, list(lists))] = np.nan
    return counts


def document_languages(langs: Sequence[str] | None, n_docs: int, by_language: bool) -> np.ndarray:
    """The language each document's stop words are taken from: its detected `lang` when
    known and counted by language, else English (the paper's list)."""
    if langs is None or not by_language:
        return np.full(n_docs, ENGLISH, dtype=object)
    langs = np.asarray(pd.Series(langs, dtype=object).fillna(""), dtype=object)
    return np.where(langs == "", ENGLISH, langs)


def measure(layout: TextLayout) -> dict[str, np.ndarray]:
    """The document measures the Gopher quality rules bound, all but `stop_words`
    (`distinct_stop_words`, which needs the words' text)."""
    n_words = layout.per_doc("word")
    word_chars = layout.per_doc("word", layout.word_chars.astype(np.float64))
    has_letter = layout.word_has_letter.astype(np.float64)

    hashes = layout.count_per_doc("#")
    ellipses = sum(layout.count_per_doc(e) for e in ELLIPSES)

    nonblank = layout.line_words > 0
    n_lines = layout.per_doc("line", where=nonblank)
    bullet = layout.line_starts_with_one_of(BULLETS)
    ends_in_ellipsis = np.logical_or.reduce([layout.line_ends_with(e) for e in ELLIPSES])

    return {
        "words": n_words,
        "mean_word_length": ratio(word_chars, n_words),
        "symbol_word_ratio": np.maximum(ratio(hashes, n_words), ratio(ellipses, n_words)),
        "bullet_line_fraction": ratio(
            layout.per_doc("line", bullet.astype(np.float64), nonblank), n_lines),
        "ellipsis_line_fraction": ratio(
            layout.per_doc("line", ends_in_ellipsis.astype(np.float64), nonblank), n_lines),
        "alpha_word_fraction": ratio(layout.per_doc("word", has_letter), n_words),
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
