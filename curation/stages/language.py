"""Language identification: langdetect's profiles, scored in bulk and deterministically.

`langdetect.detect` samples random n-grams from one document at a time (~200 docs/s per
core). Here the same profiles score every n-gram of a whole partition at once: the texts
become one array of code points, n-grams become packed integer keys looked up in one
vocabulary hash table, and a document x n-gram count matrix is multiplied by the n-gram x
language log-probability matrix. No sampling, so no seed and no run-to-run variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from langdetect.detector import Detector
from langdetect.utils.ngram import NGram
from pydantic import Field

from curation.language.langid_profiles import (
    BITS_PER_CHAR,
    FIXED_POINT_SCALE,
    LanguageProfiles,
    load_profiles,
    lookup_ngrams,
)
from curation.stages.base import Decided, Removed, ScopedConfig, Stage

SPACE = ord(" ")
SEPARATOR = "\x00"  # joins documents; langdetect maps it to a space like all Basic Latin
# A dense count block spans at most BLOCK_DOCS documents and about BLOCK_NGRAMS n-grams.
BLOCK_DOCS = 32
BLOCK_NGRAMS = 1 << 17


class LanguageConfig(ScopedConfig):
    min_score: float = Field(0.8, gt=0.0, le=1.0)
    # langdetect also reads only the first 10,000 characters of a document.
    max_chars: int = Field(10_000, ge=1, le=1_000_000)
    # The score is a posterior over languages from at most this many n-grams' worth of
    # evidence, so it says how clearly the text is one language, not how long it is.
    # 48 removes about as many documents at min_score 0.8 as langdetect's own score.
    evidence_ngrams: int = Field(48, ge=1)


def _clean(text: str, max_chars: int) -> str:
    """langdetect's text clean-up: drop URLs and e-mail addresses, join Vietnamese marks."""
    text = text[:max_chars].replace(SEPARATOR, " ")
    if "http" in text:  # cheap tests first: the patterns are slow to scan for nothing
        text = Detector.URL_RE.sub(" ", text)
    at = text.find("@")
    if at >= 0:  # no address starts more than 64 characters before its "@"
        start = max(at - 64, 0)
        text = text[:start] + Detector.MAIL_RE.sub(" ", text[start:])
    if text.isascii():  # Vietnamese tone marks are combining characters, never ASCII
        return text
    return NGram.normalize_vi(text)


def _code_points(texts: Sequence[str], max_chars: int) -> tuple[np.ndarray, np.ndarray]:
    """All texts as one code-point array, each preceded by a separator; and each
    position's document index."""
    joined = SEPARATOR + SEPARATOR.join(_clean(text, max_chars) for text in texts)
    points = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    doc_of = np.cumsum(points == 0) - 1
    return points, doc_of


def _drop_latin_in_non_latin_texts(points, doc_of, n_docs):
    """langdetect deletes the ASCII letters of a text that is mostly non-Latin script."""
    latin = (points >= ord("A")) & (points <= ord("z"))
    non_latin = (points >= 0x300) & ~((points >= 0x1E00) & (points <= 0x1EFF))
    latin_count = np.bincount(doc_of[latin], minlength=n_docs)
    non_latin_count = np.bincount(doc_of[non_latin], minlength=n_docs)
    mostly_non_latin = latin_count * 2 < non_latin_count
    if not mostly_non_latin.any():
        return points, doc_of
    keep = ~(latin & mostly_non_latin[doc_of])
    return points[keep], doc_of[keep]


def _shifted(values: np.ndarray, by: int, fill) -> np.ndarray:
    """values[i - by], with `fill` before the start."""
    out = np.empty_like(values)
    out[:by] = fill
    out[by:] = values[:-by]
    return out


def _ngram_occurrences(texts, max_chars, profiles: LanguageProfiles):
    """Vocabulary ids of every profile n-gram langdetect would extract, document after
    document, and each document's offset into them (n_docs + 1 offsets).

    langdetect splits normalised text at spaces and takes the 1-, 2- and 3-grams of each
    word padded with one space on each side (never a lone space), skipping every n-gram
    that ends on an upper-case letter preceded by another (acronyms, CONSTANTS).
    """
    points, doc_of = _code_points(texts, max_chars)
    points, doc_of = _drop_latin_in_non_latin_texts(points, doc_of, len(texts))
    chars = profiles.char_map[points]
    upper = profiles.is_upper[chars]
    space = chars == SPACE
    prev_space = _shifted(space, 1, True)
    separator = points == 0
    ends = ~separator & ~(upper & _shifted(upper, 1, False))

    # Row i holds the 1-, 2- and 3-gram ending at character i; row-major order keeps
    # the n-grams grouped by document.
    n = len(chars)
    unigrams = chars.astype(np.uint64)
    keys = np.empty((n, 3), dtype=np.uint64)
    keys[:, 0] = unigrams
    keys[:, 1] = unigrams | (_shifted(unigrams, 1, SPACE) << np.uint64(BITS_PER_CHAR))
    keys[:, 2] = keys[:, 1] | (_shifted(unigrams, 2, SPACE) << np.uint64(2 * BITS_PER_CHAR))
    valid = np.empty((n, 3), dtype=bool)
    np.logical_and(ends, ~space, out=valid[:, 0])
    np.logical_and(ends, ~(space & prev_space), out=valid[:, 1])
    np.logical_and(ends, ~prev_space, out=valid[:, 2])

    ids = lookup_ngrams(profiles, keys[valid])
    found = ids >= 0
    # A document's n-grams start at its separator row, which holds none: the running
    # count of valid n-grams there is the count before it; then count the found ones.
    valid_before = np.cumsum(valid.sum(axis=1))
    found_before = np.concatenate(([0], np.cumsum(found)))
    starts = found_before[np.append(valid_before[separator], len(ids))]
    return ids[found], starts


def _blocks(starts: np.ndarray) -> np.ndarray:
    """Document boundaries of blocks of at most BLOCK_DOCS documents, starting a new
    block every BLOCK_NGRAMS n-grams, so a dense block stays a few tens of MB."""
    n_docs = len(starts) - 1
    index = np.arange(n_docs)
    new_block = np.ones(n_docs, dtype=bool)
    new_block[1:] = (np.diff(starts[:-1] // BLOCK_NGRAMS) > 0) | (np.diff(index // BLOCK_DOCS) > 0)
    return np.append(np.flatnonzero(new_block), n_docs)


def _log_likelihoods(ids, starts, profiles: LanguageProfiles) -> np.ndarray:
    """Sum of log p(n-gram | language) per document, block of documents by block.

    Each block is a dense count matrix over the block's own n-grams times those rows of
    the log-probability matrix; fixed-point values make the sums exact in any order.
    """
    n_docs = len(starts) - 1
    totals = np.zeros((n_docs, len(profiles.languages)), dtype=np.float64)
    present = np.zeros(len(profiles.ngram_keys), dtype=bool)
    bounds = _blocks(starts)
    for first, end in zip(bounds[:-1], bounds[1:], strict=True):
        lo, hi = starts[first], starts[end]
        if hi == lo:
            continue
        block_ids = ids[lo:hi]
        present[:] = False
        present[block_ids] = True
        local_vocab = np.flatnonzero(present)
        width = len(local_vocab)
        row_offsets = np.arange(end - first) * width
        cells = np.repeat(row_offsets, np.diff(starts[first : end + 1]))
        cells += np.cumsum(present)[block_ids] - 1
        counts = np.bincount(cells, minlength=(end - first) * width)
        counts = counts.reshape(end - first, width).astype(np.float64)
        totals[first:end] = counts @ profiles.log_probs[local_vocab]
    return totals / FIXED_POINT_SCALE


def detect_languages(
    texts: Sequence[str], max_chars: int = 10_000, evidence_ngrams: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Language code and a score in [0, 1] for every text, scored in one batch.

    The code is "" (score 0) for a text with no n-gram any profile knows: empty,
    digits and punctuation only. The score is the posterior probability of the best
    language, with the evidence of longer texts scaled down to `evidence_ngrams`
    n-grams. A text gets the same result alone or inside any batch.
    """
    n_docs = len(texts)
    langs = np.full(n_docs, "", dtype=object)
    scores = np.zeros(n_docs, dtype=np.float32)
    if n_docs == 0:
        return langs, scores
    profiles = load_profiles()
    try:
        ids, starts = _ngram_occurrences(texts, max_chars, profiles)
    except TypeError as err:  # str.join names the offending item
        raise TypeError(f"detect_languages: every text must be a str ({err})") from None
    n_ngrams = np.diff(starts)
    has_features = n_ngrams > 0
    evidence = _log_likelihoods(ids, starts, profiles)[has_features]
    evidence *= np.minimum(1.0, evidence_ngrams / n_ngrams[has_features])[:, None]
    best = evidence.argmax(axis=1)
    relative = np.exp(evidence - evidence[np.arange(len(best)), best][:, None])
    langs[has_features] = profiles.languages[best]
    scores[has_features] = 1.0 / relative.sum(axis=1)
    return langs, scores


class LanguageStage(Stage):
    """Keeps documents in a language their source allows, identified clearly enough."""

    name = "language"
    config_class = LanguageConfig
    config: LanguageConfig

    def params(self) -> dict:
        # The profiles ship with langdetect: a new release may change every result.
        return {**super().params(), "langdetect": version("langdetect")}

    def _detect(self, docs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        return detect_languages(docs["text"].tolist(), cfg.max_chars, cfg.evidence_ngrams)

    def annotate(self, docs: pd.DataFrame, workdir: Path) -> pd.DataFrame:
        """Out of scope: the language is detected and recorded, nothing is removed."""
        langs, scores = self._detect(docs)
        return docs.assign(lang=langs.astype(str), lang_score=scores)

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided:
        cfg = self.config
        langs, scores = self._detect(docs)
        sources = docs["source"].astype(str).to_numpy()
        allowed_lists = {name: self._allowed(name) for name in np.unique(sources)}
        allowed = np.ones(len(docs), dtype=bool)
        for name, languages in allowed_lists.items():
            if languages is not None:
                in_source = sources == name
                allowed[in_source] = np.isin(langs[in_source], languages)

        no_features = langs == ""
        not_allowed = ~no_features & ~allowed
        low_score = ~no_features & allowed & (scores < cfg.min_score)
        keep = ~(no_features | not_allowed | low_score)

        def details(mask, extra):
            return [
                {"lang": lang, "score": round(float(score), 4), **extra(source)}
                for lang, score, source in zip(
                    langs[mask], scores[mask], sources[mask], strict=True
                )
            ]

        kept = docs[keep].assign(lang=langs[keep].astype(str), lang_score=scores[keep])
        return Decided(kept, [
            Removed(docs[no_features], "no_language_features"),
            Removed(docs[not_allowed], "language_not_allowed",
                    details(not_allowed, lambda source: {"allowed": allowed_lists[source]})),
            Removed(docs[low_score], "language_low_score",
                    details(low_score, lambda source: {"min_score": cfg.min_score})),
        ])

    def _allowed(self, source: str) -> list[str] | None:
        try:
            languages = self.spec.source(source).languages
        except LookupError:
            raise ValueError(
                f"language stage: document source {source!r} is not in the spec"
            ) from None
        return None if languages is None else list(languages)
