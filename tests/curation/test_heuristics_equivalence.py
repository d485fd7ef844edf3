"""The heuristics stage on byte layouts decides exactly as the Arrow-piece implementation
it replaced (tests/curation/heuristics_reference.py): same documents removed, for the same
rule with the same detail, same kept and rewritten texts, same measures, on real text of
this machine (Python's docs, docstrings and source, man pages, eight languages from
../shared/data) and on planted edge cases."""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.demo.python_text import docstring_records, pydoc_topic_records
from curation.heuristics import c4
from curation.heuristics.layout import WHITESPACE, TextLayout
from curation.heuristics.pieces import as_text_array
from curation.stages.base import Modified, Removed
from curation.stages.heuristics import HeuristicsConfig, HeuristicsStage
from tests.conftest import SHARED_DATA
from tests.curation import heuristics_reference as reference

EDGE_CASES = [
    "", " ", "\n", "\n\n\n", "\t \r\n", "word", " one ", "\u00a0", "١٢٣ ٤٥٦ ٧٨٩", "१२३ ४५६",
    "中文没有空格，也没有句号。日本語も同じ。", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝔴𝔬𝔯𝔡𝔰 and Ωμέγα  δέλτα",
    "a\n \n\nb", "a\n\u00a0\nb", "a\n\x1c\nb", "x\u3000y\u2028z\x1c", "é\u0085ü\u2029",
    "\n\npara one\n\t\n\n\npara two\n\n", "a\r\n\r\nb\r\n", "lone\rcarriage",
    "See [1] and [edit] and [citation needed].\n[2]\n[]\nA [ bracket that stays.",
    "JAVASCRİPT must be on.\nRead the Terms of Use.\nWe use cookies here, sorry.",
    "- one\n* two\n• three\n· four\n  ▪ five", "It goes on...\nAnd on…\nAnd on. . .",
    "x" * 1200 + " long word line here.", "#tag #tag #tag words",
    "Ends with a curly quote.”\nAnd a straight one.\"\nAnd a question?\nAnd !",
]


def _stdlib_sources(n: int) -> list[str]:
    root = Path(json.__file__).resolve().parents[1]
    return [p.read_text("utf-8", "replace") for p in sorted(root.glob("*.py"))[:n]]


def _man_pages(n: int) -> list[str]:
    """Raw troff of a few man pages, where the machine has them."""
    pages = sorted(Path("/usr/share/man/man1").glob("*.gz"))[:n]
    return [gzip.decompress(p.read_bytes()).decode("utf-8", "replace") for p in pages]


def _shared_sample() -> list[dict]:
    path = SHARED_DATA / "langid-sample.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _planted_repeats(texts: list[str], rng: random.Random) -> list[str]:
    """Documents built from pieces of real ones, with lines, paragraphs and n-grams
    repeated (so every repetition rule has something to measure)."""
    out = []
    for text in rng.sample(texts, 40):
        lines = [line for line in text.split("\n") if line.strip()][:12] or ["x y z"]
        words = text.split()[:80] or ["w"]
        out.append("\n".join(lines + lines[: len(lines) // 2]))
        out.append("\n\n".join([" ".join(words[:30])] * 3 + [" ".join(words)]))
        out.append(" ".join(words[:7] * 4 + words))
    return out


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    rng = random.Random(22)
    texts = [r["text"] for r in pydoc_topic_records()] + [r["text"] for r in docstring_records()]
    texts += _stdlib_sources(25) + _man_pages(30)
    texts += _planted_repeats(texts, rng) + EDGE_CASES
    texts += [t.replace("\n", "\r\n") for t in rng.sample(texts, 20)]
    langs = ["en"] * len(texts)
    for record in _shared_sample():  # each in its labelled language
        texts.append(record["text"])
        langs.append(record["lang"])
    return pd.DataFrame({"id": [str(i) for i in range(len(texts))], "source": "real",
                         "text": texts, "meta": "{}", "lang": langs})


CONFIGS = [
    {"gopher_quality": {}, "gopher_repetition": {}, "c4": {}},
    {"gopher_quality": {}, "c4": {}, "gopher_repetition": {"dup_ngram_occurrences": "repeats"}},
    {"gopher_quality": {"stop_words_by_language": False}, "gopher_repetition": {}},
    {"c4": {"remove_citations": False, "terminal_punctuation": [".", "!!", "”"]}},
    {"gopher_repetition": {"max_dup_line_fraction": 0.9, "max_top_2gram_char_fraction": 0.5}},
    {"gopher_quality": {"min_words": 5, "min_stop_words": 1}},
]


def _decisions(out) -> tuple[dict, dict]:
    removed, modified = {}, {}
    for decision in out.decisions:
        target = removed if isinstance(decision, Removed) else modified
        assert isinstance(decision, Removed | Modified)
        reasons = decision.reason if not isinstance(decision.reason, str) else (
            [decision.reason] * len(decision.docs))
        target.update(zip(decision.docs["id"], zip(reasons, decision.detail, strict=True),
                          strict=True))
    return removed, modified


@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize("with_langs", [True, False], ids=["lang", "no_lang"])
def test_same_decisions_details_and_texts_as_the_reference(corpus, config, with_langs):
    docs = corpus if with_langs else corpus.drop(columns="lang")
    config = HeuristicsConfig.model_validate(config)
    out = HeuristicsStage(config, spec=None).run(docs, 0, Path("."))
    judged = reference.judge(config, as_text_array(docs["text"]),
                             docs["lang"] if with_langs else None)

    removed, modified = _decisions(out)
    failed = np.flatnonzero(judged.failed != -1)
    rules = [judged.rules[judged.failed[i]] for i in failed]
    assert removed == {
        str(i): (rule.name, rule.detail(judged.measures[rule.measure][i]))
        for i, rule in zip(failed, rules, strict=True)}
    assert len(removed) and len(out.kept)

    keep = judged.failed == -1
    texts = judged.lines_cut.texts if judged.lines_cut is not None else as_text_array(docs["text"])
    assert dict(zip(out.kept["id"], out.kept["text"], strict=True)) == dict(
        zip(docs["id"][keep], texts.filter(pa.array(keep)).to_pylist(), strict=True))
    if judged.lines_cut is not None:
        cut = judged.lines_cut
        changed = np.flatnonzero(keep & ((cut.lines_removed > 0) | (cut.citations_removed > 0)))
        assert len(changed) and set(modified) == {str(i) for i in changed}


@pytest.mark.parametrize("config", CONFIGS[:3], ids=range(3))
def test_same_measures_for_every_document_still_judged(corpus, config):
    """Measures the stage takes only for documents that passed the rules before them
    (NaN elsewhere) equal the reference's there; all others equal everywhere."""
    config = HeuristicsConfig.model_validate(config)
    stage = HeuristicsStage(config, spec=None)
    texts = as_text_array(corpus["text"])
    layout = TextLayout(texts)
    filtered = texts
    if config.c4:
        filtered = c4.filter_lines(config.c4, layout).texts
    measures, rules = stage._measures(layout, filtered, corpus["lang"])
    judged = reference.judge(config, texts, corpus["lang"])
    assert [r.name for r in rules] == [r.name for r in judged.rules]
    for index, rule in enumerate(rules):
        ours, theirs = measures[rule.measure], judged.measures[rule.measure]
        judged_here = (judged.failed == -1) | (judged.failed >= index)
        assert not np.isnan(ours[judged_here & ~np.isnan(theirs)]).any(), rule.name
        both = ~np.isnan(ours)
        np.testing.assert_array_equal(ours[both], theirs[both], err_msg=rule.name)


def test_pieces_equal_the_arrow_splits(corpus):
    texts = as_text_array(corpus["text"])[5:]  # an array that starts at an offset
    layout = TextLayout(texts)
    words = reference.split_words(texts)
    lines = reference.split_lines(texts)
    docs = np.arange(len(texts))
    assert layout.doc_words(docs).distinct.take(
        pa.array(layout.doc_words(docs).ids)).equals(words.values)
    np.testing.assert_array_equal(layout.word_chars, words.lengths())
    np.testing.assert_array_equal(
        layout.word_has_letter, np.asarray(pc.match_substring_regex(words.values, r"\pL")))
    assert layout.lines(np.arange(layout.n_lines)).equals(lines.values)
    for ours, theirs in [
        (layout.trimmed_lines(), reference.stripped_nonblank(lines)),
        (layout.trimmed_paragraphs(), reference.stripped_nonblank(
            reference.split_paragraphs(texts))),
    ]:
        assert ours.values.equals(theirs.values)
        np.testing.assert_array_equal(ours.doc, theirs.doc)


def test_whitespace_is_arrows_over_every_code_point():
    codes = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
    words = pc.utf8_split_whitespace(pa.array(["a" + chr(c) + "b" for c in codes]))
    splits = np.diff(np.asarray(words.offsets)) != 1
    assert tuple(np.asarray(codes)[splits].tolist()) == WHITESPACE
