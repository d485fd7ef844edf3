"""`looks_bad` is ftfy's `is_bad`, searched only near the characters mojibake is made of:
the same answer on random and real text, and the full search whenever ftfy's regex does
not have the shape the shortcut relies on."""

import json
import random
import re
import string
from pathlib import Path

import pytest
from ftfy.badness import MOJIBAKE_CATEGORIES, is_bad

from curation.normalize import mojibake_scan
from curation.normalize.mojibake_scan import looks_bad

LANGID = Path(__file__).resolve().parents[3] / "shared" / "data" / "langid-sample.jsonl"


def test_the_shortcut_is_active_for_the_installed_ftfy():
    assert mojibake_scan.ANCHOR_RE is not None and 2 <= mojibake_scan.WIDTH <= 16


def _pool() -> list[str]:
    """ASCII, every character ftfy's categories name, Greek, Cyrillic and a few more."""
    categories = re.compile("[" + "".join(MOJIBAKE_CATEGORIES.values()) + "]")
    named = [chr(c) for c in range(0x80, 0x2600) if categories.match(chr(c))]
    scripts = [chr(c) for c in list(range(0x391, 0x3CF)) + list(range(0x400, 0x460))]
    extra = list("°×²³√≈‚Ä∂≠≤≥¥µø™´ГўВЂ漢字\u3000\U0001f600") + ["Â ", "Ã ", "à²"]
    return list(string.ascii_letters + string.digits + " .,?!\n\t") * 3 + named + scripts + extra


@pytest.mark.parametrize("seed", [1, 2])
def test_same_answer_as_is_bad_on_random_text(seed):
    rng = random.Random(seed)
    pool = _pool()
    texts = ["".join(rng.choices(pool, k=rng.randint(1, 24))) for _ in range(30000)]
    answers = [is_bad(t) for t in texts]
    assert 0.1 < sum(answers) / len(texts) < 0.9  # both answers well represented
    assert [looks_bad(t) for t in texts] == answers


def test_same_answer_as_is_bad_on_real_text_and_its_mojibake():
    if not LANGID.exists():
        pytest.skip(f"{LANGID} not present")
    with LANGID.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    variants = texts + [t.encode("utf-8").decode("latin-1") for t in texts] + [
        t.encode("utf-8").decode("cp1252", errors="replace") for t in texts]
    lines = [line for text in variants for line in text.split("\n") if line]
    assert [looks_bad(line) for line in lines] == [is_bad(line) for line in lines]


def test_a_branch_without_a_non_ascii_anchor_means_no_shortcut():
    assert mojibake_scan._anchor_characters(re.compile("é[a-z]|[a-z]x")) is None
    assert mojibake_scan._anchor_characters(re.compile("é[^a]|[ab][Ωω]")) == {0xE9, 0x3A9, 0x3C9}


@pytest.mark.parametrize("mojibake", ["ГўВЂВ™s", "‚Äôt", "â€™", "Ã© ", "Â ", "вЂ", "β€™"])
def test_planted_mojibake_found_at_every_offset(mojibake):
    """The longest branch ("ГўВЂВ.[A-Za-z ]": 7 characters) needs the whole window."""
    for before in range(0, 9):
        for after in range(0, 3):
            text = "ab cd ef g"[:before] + mojibake + "xy"[:after]
            assert looks_bad(text) == is_bad(text), repr(text)
    assert is_bad(mojibake + "x")
