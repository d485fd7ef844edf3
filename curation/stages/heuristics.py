"""The `heuristics` stage: C4 line clean-up, then C4, Gopher quality and Gopher
repetition document rules.

Order (fixed): the C4 line filter rewrites each text and the C4 page rules judge the
rewritten text; the Gopher rules measure the document as it entered the stage, before
the C4 line filter changed it (the order datatrove and FineWeb use: Gopher's thresholds
were set on whole pages, and the line filter would remove exactly the ellipsis and
bullet lines its rules count). Rules are checked family by family — C4 page rules,
Gopher quality, Gopher repetition — each family in the order its module documents. A
document is removed under the first rule it fails (the ledger reason is that rule's
name, the detail its measured value and threshold); a kept document gets the rewritten
text and, when the line filter changed it, a `modified` row. The costly repetition
measures are computed only for documents that passed everything before them.

Gopher's stop-word rule uses the `lang` column the language stage adds (English when
the language stage did not run).

In the spec, `{gopher_quality: {}, gopher_repetition: {}, c4: {}}` switches every family
on with the papers' defaults; a family left out (or null) is off, and so is any single
threshold set to null.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from curation.heuristics import c4, gopher_quality, gopher_repetition
from curation.heuristics.c4 import C4Config
from curation.heuristics.gopher_quality import GopherQualityConfig
from curation.heuristics.gopher_repetition import GopherRepetitionConfig
from curation.heuristics.layout import TextLayout
from curation.heuristics.pieces import as_text_array
from curation.heuristics.rules import NOT_FAILED, Rule, first_failures
from curation.stages.base import Decided, Modified, Removed, ScopedConfig, Stage

__all__ = [
    "C4Config",
    "GopherQualityConfig",
    "GopherRepetitionConfig",
    "HeuristicsConfig",
    "HeuristicsStage",
]


class HeuristicsConfig(ScopedConfig):
    """Which rule families run; None (or left out) means off, `{}` the paper defaults."""

    gopher_quality: GopherQualityConfig | None = None
    gopher_repetition: GopherRepetitionConfig | None = None
    c4: C4Config | None = None


class HeuristicsStage(Stage):
    name = "heuristics"
    config_class = HeuristicsConfig

    def params(self) -> dict:
        # The stop-word lists ship with stopwordsiso: a new release may change results.
        return {**super().params(), "stopwordsiso": version("stopwordsiso")}

    def _measures(
        self, layout: TextLayout, filtered: pa.Array, langs
    ) -> tuple[dict[str, np.ndarray], list[Rule]]:
        """Every switched-on rule, in the order documents are judged, and the measures
        they bound: C4's on the `filtered` texts, Gopher's on the texts as they entered
        (`layout`). The measures that need the words' text (stop words, repetition) are
        taken only for documents that pass every rule before them (elsewhere they are
        NaN, which fails no rule)."""
        config = self.config
        measures: dict[str, np.ndarray] = {}
        rules: list[Rule] = []
        if config.c4:
            measures.update(c4.measure(filtered))
            rules += c4.rules(config.c4)
        words = None
        if config.gopher_quality:
            measures.update(gopher_quality.measure(layout))
            quality_rules = gopher_quality.rules(config.gopher_quality)
            rules += [r for r in quality_rules if r.measure != "stop_words"]
            words = layout.doc_words(_passing(rules, measures, layout.n_docs))
            measures["stop_words"] = _spread(words.docs, layout.n_docs, (
                gopher_quality.distinct_stop_words(words, gopher_quality.document_languages(
                    None if langs is None else np.asarray(langs, dtype=object)[words.docs],
                    len(words.docs), config.gopher_quality.stop_words_by_language),
                    config.gopher_quality)))
            rules += [r for r in quality_rules if r.measure == "stop_words"]
        if config.gopher_repetition:
            passing = _passing(rules, measures, layout.n_docs)
            if words is None:
                words = layout.doc_words(passing)
            else:
                words = words.subset(np.searchsorted(words.docs, passing))
            subset = gopher_repetition.measure(layout, words, config.gopher_repetition)
            for key, values in subset.items():
                measures[key] = _spread(passing, layout.n_docs, values)
            rules += gopher_repetition.rules(config.gopher_repetition)
        return measures, rules

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided:
        docs = docs.reset_index(drop=True)
        texts = as_text_array(docs["text"])
        layout = TextLayout(texts)
        lines_cut = None
        if self.config.c4 and self.config.c4.filters_lines():
            lines_cut = c4.filter_lines(self.config.c4, layout)
            texts = lines_cut.texts

        langs = docs["lang"] if "lang" in docs.columns else None
        measures, rules = self._measures(layout, texts, langs)
        failed = first_failures(rules, measures, np.ones(len(docs), bool))
        removed = np.flatnonzero(failed != NOT_FAILED)
        decisions = [Removed(
            docs.iloc[removed],
            [rules[failed[i]].name for i in removed],
            [rules[failed[i]].detail(measures[rules[failed[i]].measure][i]) for i in removed],
        )]

        keep = failed == NOT_FAILED
        kept = docs[keep].copy()
        kept["text"] = pd.Series(
            texts.filter(pa.array(keep)).to_numpy(zero_copy_only=False),
            index=kept.index,
            dtype=docs["text"].dtype,
        )
        if lines_cut is not None:
            changed = (lines_cut.lines_removed > 0) | (lines_cut.citations_removed > 0)
            modified = np.flatnonzero(keep & changed)
            decisions.append(Modified(docs.iloc[modified], "c4.line_filter",
                                      [_line_cut_detail(lines_cut, i) for i in modified]))
        return Decided(kept, decisions)


def _passing(rules: list[Rule], measures: dict[str, np.ndarray], n_docs: int) -> np.ndarray:
    """The documents (ascending) that fail none of `rules`."""
    return np.flatnonzero(first_failures(rules, measures, np.ones(n_docs, bool)) == NOT_FAILED)


def _spread(rows: np.ndarray, n_docs: int, values: np.ndarray) -> np.ndarray:
    """Per document: `values` at `rows`, NaN elsewhere."""
    out = np.full(n_docs, np.nan)
    out[rows] = values
    return out


def _line_cut_detail(cut: c4.LineFilterResult, i: int) -> dict:
    by_rule = {rule: int(counts[i]) for rule, counts in cut.lines_removed_by_rule.items()}
    detail = {
        "lines_removed": int(cut.lines_removed[i]),
        "chars_removed": int(cut.chars_removed[i]),
        "lines_removed_by_rule": {rule: n for rule, n in by_rule.items() if n},
    }
    if cut.citations_removed[i]:
        detail["citations_removed"] = int(cut.citations_removed[i])
    return detail

