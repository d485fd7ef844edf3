"""normalize: exact outcomes on planted text, and identity with the plain per-document path."""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path
from pydoc_data.topics import topics

import ftfy
import pandas as pd
import pytest
from pydantic import ValidationError

from curation.normalize import ftfy_lines
from curation.normalize.ftfy_lines import fix_text_by_line
from curation.stages.normalize import (
    NormalizeConfig,
    NormalizeStage,
    clean_whitespace,
    normalize_text,
)

LANGID = Path(__file__).resolve().parents[3] / "shared" / "data" / "langid-sample.jsonl"


def _docs(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"d{i}" for i in range(len(texts))], "source": "s",
        "text": texts, "meta": "{}",
    })


def _texts(kept: pd.DataFrame) -> dict[str, str]:
    return dict(zip(kept["id"], kept["text"], strict=True))


def _run(texts: list[str], **config) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = NormalizeStage(NormalizeConfig(**config), None).process(_docs(texts), 0, Path("."))
    return out.kept, out.ledger


def _reference(texts: list[str], config: NormalizeConfig) -> dict[str, str]:
    """Plain per-document fix_text + NFC + whitespace rules, written without the stage."""
    expected = {}
    for i, text in enumerate(texts):
        if config.fix_unicode:
            text = ftfy.fix_text(text) if config.nfc else ftfy.fix_text(text, normalization=None)
        if config.nfc:
            text = unicodedata.normalize("NFC", text)
        if config.whitespace:
            text = clean_whitespace(text)
        if text:
            expected[f"d{i}"] = text
    return expected


def test_planted_outcomes():
    texts = [
        "plain ascii text",                       # untouched
        "caf\u00c3\u00a9 au lait",                # mojibake
        "It\u00e2\u0080\u0099s here",             # curly-quote mojibake
        "line one  \r\nline two\t\r\n",           # CRLF and trailing space
        "a\n\n\n\n\n\nb",                         # five blank lines
        "   \n\t \r\n ",                          # only whitespace
        "Tom &amp; Jerry",                        # HTML entity in plain ASCII
        "e\u0301t\u00e9",                         # decomposed e + accent
        "non\u00a0breaking\u00a0\nend",           # NBSP inside and at a line end
        "col\x1b[31mored\x07",                    # terminal escape and a control char
    ]
    kept, ledger = _run(texts)
    text = _texts(kept)
    assert text["d0"] == "plain ascii text"
    assert text["d1"] == "café au lait"
    assert text["d2"] == "It's here"
    assert text["d3"] == "line one\nline two"
    assert text["d4"] == "a\n\n\nb"
    assert "d5" not in text
    assert text["d6"] == "Tom & Jerry"
    assert text["d7"] == "été"
    assert text["d8"] == "non\u00a0breaking\nend"
    assert text["d9"] == "colored"

    rows = ledger.set_index("id")
    assert set(rows.index) == {f"d{i}" for i in range(1, 10)}
    assert rows.loc["d5", "action"] == "removed" and rows.loc["d5", "reason"] == "empty_text"
    assert json.loads(rows.loc["d5", "detail"]) == {"chars_before": 9}
    reasons = rows["reason"].to_dict()
    assert reasons["d1"] == reasons["d2"] == reasons["d6"] == reasons["d7"] == "unicode_fixed"
    assert reasons["d3"] == reasons["d4"] == reasons["d8"] == "whitespace"
    assert json.loads(rows.loc["d3", "detail"]) == {"chars_before": 23, "chars_after": 17}
    assert (rows.drop("d5")["action"] == "modified").all()
    assert (rows["stage"] == "normalize").all()


def test_reason_names_both_changes_and_accounting_holds():
    texts = ["caf\u00c3\u00a9  \n\n\n\n\nx", "fine", "  "]
    kept, ledger = _run(texts)
    assert list(kept["id"]) == ["d0", "d1"]
    assert ledger.set_index("id").loc["d0", "reason"] == "unicode_fixed+whitespace"
    removed = set(ledger.loc[ledger["action"] == "removed", "id"])
    assert set(kept["id"]) | removed == {"d0", "d1", "d2"} and not set(kept["id"]) & removed


def test_line_endings_alone_count_as_whitespace_on_either_path():
    kept, ledger = _run(["ascii\r\nonly", "caf\u00e9\r\nunicode"])
    assert list(kept["text"]) == ["ascii\nonly", "caf\u00e9\nunicode"]
    assert list(ledger["reason"]) == ["whitespace", "whitespace"]


def test_switches_turn_steps_off():
    texts = ["caf\u00c3\u00a9  ", "e\u0301", "a &amp; b\r\n"]
    kept, _ = _run(texts, fix_unicode=False, nfc=False)
    assert list(kept["text"]) == ["caf\u00c3\u00a9", "e\u0301", "a &amp; b"]
    kept, _ = _run(texts, whitespace=False)
    assert list(kept["text"]) == ["café  ", "\u00e9", "a & b\n"]
    kept, _ = _run(texts, fix_unicode=False)
    assert list(kept["text"]) == ["caf\u00c3\u00a9", "\u00e9", "a &amp; b"]
    kept, ledger = _run(texts, fix_unicode=False, nfc=False, whitespace=False)
    assert list(kept["text"]) == texts and ledger.empty
    with pytest.raises(ValidationError):
        NormalizeConfig(fix_ascii=True)


def test_empty_partition():
    kept, ledger = _run([])
    assert kept.empty and ledger.empty


def _corpus() -> list[str]:
    """Real text (Python docs, langid sample) with planted damage of every kind ftfy fixes."""
    rng = random.Random(7)
    texts = list(topics.values())[:200]
    if LANGID.exists():
        with LANGID.open(encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f][:150]
    damage = [
        lambda t: t.encode("utf-8").decode("latin-1"),
        lambda t: t.encode("utf-8").decode("cp1252", errors="replace"),
        lambda t: t.replace("\n", "\r\n"),
        lambda t: t.replace("\n", "\r"),
        lambda t: t.replace(" ", "  \t", 5).replace("\n", " \u00a0\n"),
        lambda t: t.replace("&", "&amp;").replace("<", "&lt;"),
        lambda t: "<p>" + t.replace("e", "&eacute;", 3),
        lambda t: t.replace("'", "\u2019").replace('"', "\u201c"),
        lambda t: t.replace("a", "\x1b[1ma\x1b[0m", 2) + "\x00\x0b\x7f",
        lambda t: unicodedata.normalize("NFD", t),
        lambda t: "\n\n\n\n\n" + t.replace("\n\n", "\n\n\n\n\n\n") + "\n \n\n\n",
        lambda t: t.replace("fi", "\ufb01").replace("1", "\uff11"),
        lambda t: "\ufeff" + t + "\u2028next\u2029para\x85",
    ]
    planted = []
    for text in texts:
        snippet = text[: rng.randint(0, 400)]
        for fix in rng.sample(damage, 3):
            snippet = fix(snippet)
        planted.append(snippet)
    return texts + planted


@pytest.mark.parametrize("config", [
    NormalizeConfig(),
    NormalizeConfig(nfc=False),
    NormalizeConfig(fix_unicode=False),
    NormalizeConfig(whitespace=False),
])
def test_identical_to_plain_per_document_path(config):
    texts = _corpus()
    out = NormalizeStage(config, None).process(_docs(texts), 0, Path("."))
    assert _texts(out.kept) == _reference(texts, config)


def test_random_ascii_matches_ftfy():
    """Random ASCII (controls, entities, CR, spaces) hits every branch of the fast path."""
    rng = random.Random(11)
    alphabet = ["a", "b", " ", "\t", "\n", "\r", "\r\n", "&", "&amp;", "&#65;", ";", "<",
                "\x1b[0m", "\x07", "\x0b", "\x0c", "\x7f", "#", "x", "lt", "&lt;"]
    texts = ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(3000)]
    out = NormalizeStage(NormalizeConfig(), None).process(_docs(texts), 0, Path("."))
    assert _texts(out.kept) == _reference(texts, NormalizeConfig())


def test_normalize_text_is_the_per_document_definition():
    texts = ["caf\u00c3\u00a9 \r\n\n\n\n\nx ", "a &amp; b", " \t\n", "e\u0301"]
    config = NormalizeConfig()
    assert {f"d{i}": normalize_text(t) for i, t in enumerate(texts) if normalize_text(t)} == (
        _reference(texts, config)
    )


def test_fix_text_by_line_keeps_ftfy_html_state_across_lines():
    config = ftfy.TextFixerConfig(explain=False)
    texts = [
        "caf\u00c3\u00a9 &amp; tea\nplain &amp; ascii\n<p> markup\nlater &amp; kept\u2019s",
        "\u201cquoted\u201d\r\nascii line\r\ncaf\u00c3\u00a9\rend\n",
        "x" * 30 + "\u00c3\u00a9",
    ]
    for text in texts:
        assert fix_text_by_line(text, config) == ftfy.fix_text(text)
    small = ftfy.TextFixerConfig(explain=False, max_decode_length=20)
    assert fix_text_by_line(texts[2], small) == ftfy.fix_text(texts[2], small)
    assert fix_text_by_line(texts[0], config).split("\n")[1:] == [
        "plain & ascii", "<p> markup", "later &amp; kept's"]


def test_random_unicode_lines_match_ftfy():
    """Random lines of accented, Cyrillic, CJK and emoji text mixed with mojibake fragments,
    curly quotes, ligatures, wide forms, decomposed accents, separators and entities: the
    lines fixed without ftfy must come out exactly as ftfy makes them."""
    rng = random.Random(13)
    alphabet = ["a", "e", " ", "\n", "caf\u00e9", "\u00fc", "\u00df", "\u00e7a", "\u00a9",
                "\u0436\u0438\u0437\u043d\u044c", "\u6f22\u5b57", "\U0001f600", "\u2014",
                "\u2026", "\u00a0", "\u00c3\u00a9", "\u00e2\u20ac\u2122", "\u00c3",
                "\u00c2\u00a0", "\u20ac", "\u2122", "\u0153", "\u2019", "\u201c", "\ufb01",
                "\uff21", "e\u0301", "\u2028", "\x85", "&", "&amp;", "<", "\r\n", "\u00e9\u00e8"]
    weights = [12] * 15 + [1] * (len(alphabet) - 15)  # clean text first, damage sprinkled
    texts = ["".join(rng.choices(alphabet, weights, k=rng.randint(1, 30))) for _ in range(4000)]
    config = ftfy.TextFixerConfig(explain=False)
    for text in texts:
        assert fix_text_by_line(text, config) == ftfy.fix_text(text), repr(text)
    lines = [line + "\n" for text in texts for line in text.split("\n")
             if line and not line.isascii()]
    quick = [ftfy_lines._quick_fix(line, config) for line in lines]
    assert 0.1 * len(lines) < sum(q is not None for q in quick) < 0.9 * len(lines)
    assert sum(q is not None and q != line for q, line in zip(quick, lines, strict=True)) > 100
