"""The language stage: langdetect's profiles scored in bulk, deterministically."""

import json
from collections import Counter
from pathlib import Path
from pydoc_data.topics import topics
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from langdetect import DetectorFactory, detector_factory
from pydantic import ValidationError

from curation.documents import DOCUMENT_COLUMNS, LEDGER_COLUMNS
from curation.language.langid_profiles import _pack_strings, load_profiles
from curation.stages.language import (
    LanguageConfig,
    LanguageStage,
    _ngram_occurrences,
    detect_languages,
)

SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "langid-sample.jsonl"

ENGLISH = (
    "The interpreter reads a line of input, compiles it and runs it, then prints the "
    "result of the expression before it waits for the next line."
)
SPANISH = (
    "El intérprete lee una línea de entrada, la compila y la ejecuta, y luego muestra el "
    "resultado de la expresión antes de esperar la siguiente línea."
)
RUSSIAN = "Интерпретатор читает строку ввода, компилирует и выполняет её, затем печатает результат."


def langdetect_ngrams(text: str) -> Counter:
    """The n-grams langdetect's own Detector extracts from `text` (before sampling)."""
    detector_factory.init_factory()
    detector = detector_factory._factory.create()
    detector.append(text)
    detector.cleaning_text()
    return Counter(detector._extract_ngrams())


def test_ngrams_are_exactly_langdetects():
    texts = [
        ENGLISH,
        SPANISH,
        RUSSIAN + " with some LATIN words and CAPS",  # mostly Cyrillic: Latin letters dropped
        "NASA and the UNIX API said: HeLLo WORLDs, x y z.",  # acronyms, mixed case
        "see https://example.org/a?b=1 or mail me@example.com today",  # URL and e-mail
        "Tiếng Việt có dấu: Tie\u0302\u0301ng",  # Vietnamese, decomposed marks
        "déjà vu — naïve «quoted» ½ ¿qué? Ωmega",  # Latin-1 and punctuation blocks
        "",
    ]
    profiles = load_profiles()
    ids, starts = _ngram_occurrences(texts, 10_000, profiles)
    for i, text in enumerate(texts):
        ours = Counter(profiles.ngram_keys[ids[starts[i] : starts[i + 1]]].tolist())
        theirs_grams = langdetect_ngrams(text)
        theirs_keys = _pack_strings(list(theirs_grams)).tolist()
        theirs = Counter(dict(zip(theirs_keys, theirs_grams.values(), strict=True)))
        assert ours == theirs, f"text {i}: {text!r}"


def read_sample() -> tuple[list[str], np.ndarray]:
    if not SAMPLE.exists():
        pytest.skip(f"labelled sample not found at {SAMPLE} (shared data not checked out)")
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    return [row["text"] for row in rows], np.array([row["lang"] for row in rows])


def test_accuracy_at_least_langdetects_on_labelled_sample():
    texts, gold = read_sample()
    saved_seed = DetectorFactory.seed
    DetectorFactory.seed = 0
    try:
        from langdetect import detect

        reference = np.array([detect(text) for text in texts])
    finally:
        DetectorFactory.seed = saved_seed
    langs, scores = detect_languages(texts)
    ours, theirs = (langs == gold).mean(), (reference == gold).mean()
    assert ours >= theirs, f"accuracy {ours:.4f} < langdetect's {theirs:.4f}"
    assert len(set(gold)) == 8 and ours > 0.7


def test_python_docs_are_english():
    texts = [topics[key] for key in sorted(topics)]
    langs, scores = detect_languages(texts)
    assert (langs == "en").all()
    assert (scores >= 0.8).all()


def test_planted_languages():
    langs, scores = detect_languages([ENGLISH, SPANISH, RUSSIAN])
    assert langs.tolist() == ["en", "es", "ru"]
    assert (scores > 0.99).all() and scores.dtype == np.float32


def test_deterministic_alone_and_in_any_batch():
    paragraphs = [p for key in sorted(topics)[:40] for p in topics[key].split("\n\n")]
    texts = [ENGLISH, SPANISH, RUSSIAN, "Hello world", *paragraphs]
    langs, scores = detect_languages(texts)
    again = detect_languages(texts)
    assert (again[0] == langs).all() and (again[1] == scores).all()
    reversed_langs, reversed_scores = detect_languages(texts[::-1])
    assert (reversed_langs[::-1] == langs).all()
    assert (reversed_scores[::-1] == scores).all()
    for i in [0, 1, 2, 3, 10, len(texts) - 1]:
        alone = detect_languages([texts[i]])
        assert alone[0][0] == langs[i] and alone[1][0] == scores[i]


def test_no_features():
    texts = ["", "   \n\t ", "12345 678.9", "!!! ... --- ###", "https://example.org/x", ENGLISH]
    langs, scores = detect_languages(texts)
    assert langs.tolist() == ["", "", "", "", "", "en"]
    assert scores[:5].tolist() == [0.0] * 5


def test_empty_batch():
    langs, scores = detect_languages([])
    assert langs.shape == (0,) and scores.shape == (0,)


def make_spec(languages: dict):
    sources = {
        name: SimpleNamespace(name=name, languages=langs) for name, langs in languages.items()
    }
    return SimpleNamespace(
        name="t", seed=1, sources=list(sources.values()), source=sources.__getitem__
    )


def documents(rows) -> pd.DataFrame:
    return pd.DataFrame(
        [{"id": i, "source": s, "text": t, "meta": "{}"} for i, s, t in rows],
        columns=DOCUMENT_COLUMNS,
    )


def test_stage_outcomes():
    spec = make_spec({"pydocs": ["en"], "web": None, "mixed": ["en", "es"]})
    docs = documents(
        [
            ("a", "pydocs", ENGLISH),
            ("b", "pydocs", SPANISH),  # Spanish where only English is allowed
            ("c", "web", SPANISH),  # any language
            ("d", "web", "12345 678"),  # nothing to score
            ("e", "web", "Hello world"),  # too short to tell: scores ~0.5
            ("f", "mixed", SPANISH),
            ("g", "mixed", RUSSIAN),
        ]
    )
    out = LanguageStage(LanguageConfig(min_score=0.8), spec).process(docs, 0, Path("."))

    assert out.kept["id"].tolist() == ["a", "c", "f"]
    assert out.kept["lang"].tolist() == ["en", "es", "es"]
    assert (out.kept["lang_score"] >= 0.8).all()
    assert list(out.kept.columns) == [*DOCUMENT_COLUMNS, "lang", "lang_score"]

    ledger = out.ledger.set_index("id")
    assert list(out.ledger.columns) == LEDGER_COLUMNS
    assert sorted(ledger.index) == ["b", "d", "e", "g"]
    assert (ledger["stage"] == "language").all() and (ledger["action"] == "removed").all()
    reasons = ledger["reason"].to_dict()
    assert reasons == {
        "b": "language_not_allowed",
        "d": "no_language_features",
        "e": "language_low_score",
        "g": "language_not_allowed",
    }
    detail = {i: json.loads(d) for i, d in ledger["detail"].items()}
    assert detail["b"]["lang"] == "es" and detail["b"]["allowed"] == ["en"]
    assert detail["g"]["lang"] == "ru" and detail["g"]["allowed"] == ["en", "es"]
    assert detail["e"]["score"] < 0.8 and detail["e"]["min_score"] == 0.8
    assert detail["d"] == {}
    assert len(out.kept) + len(out.ledger) == len(docs)


def test_stage_min_score_threshold_is_inclusive_and_applied():
    spec = make_spec({"web": None})
    docs = documents([("x", "web", "Hello world")])
    score = float(detect_languages(["Hello world"])[1][0])
    at = LanguageStage(LanguageConfig(min_score=score), spec).process(docs, 0, Path("."))
    assert at.kept["id"].tolist() == ["x"]
    above = LanguageStage(LanguageConfig(min_score=min(1.0, score + 1e-3)), spec)
    assert above.process(docs, 0, Path(".")).ledger["reason"].tolist() == ["language_low_score"]


def test_stage_unknown_source_is_a_clear_error():
    stage = LanguageStage(LanguageConfig(), make_spec({"web": None}))
    with pytest.raises(ValueError, match="'nowhere' is not in the spec"):
        stage.process(documents([("x", "nowhere", ENGLISH)]), 0, Path("."))


def test_stage_empty_partition():
    stage = LanguageStage(LanguageConfig(), make_spec({"web": None}))
    out = stage.process(documents([]), 0, Path("."))
    assert len(out.kept) == 0 and len(out.ledger) == 0
    assert "lang" in out.kept.columns and "lang_score" in out.kept.columns


def test_config():
    assert LanguageConfig().min_score == 0.8
    assert LanguageConfig(min_score=1.0).min_score == 1.0
    for bad in [0, -0.1, 1.5]:
        with pytest.raises(ValidationError, match="min_score"):
            LanguageConfig(min_score=bad)
    with pytest.raises(ValidationError, match="min_scor"):
        LanguageConfig(min_scor=0.5)
    with pytest.raises(ValidationError, match="max_chars"):
        LanguageConfig(max_chars=0)
    params = LanguageStage(LanguageConfig(), make_spec({})).params()
    assert params["config"]["min_score"] == 0.8 and params["langdetect"]
