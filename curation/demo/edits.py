"""Controlled damage for planted test cases: near copies with a chosen Jaccard, and mojibake.

Near copies substitute whole words at positions at least `ngram` apart and away from the
ends, so every substitution replaces exactly `ngram` shingles: with m shingles and k edits
the Jaccard similarity of the shingle sets is (m - n·k) / (m + n·k), which we solve for k.
"""

from __future__ import annotations

import random
import re

_TOKENS = re.compile(r"(\s+)")
_ALPHA_WORD = re.compile(r"[A-Za-z]+")

# Replacement words: plain, unlikely to recreate a shingle of the original by chance.
REPLACEMENT_WORDS = tuple(
    """
amber basalt cobalt dune ember fjord garnet harbor indigo juniper kestrel lagoon meadow
nectar orchid pebble quartz raven saffron thistle umber velvet willow yarrow zephyr
""".split()
)

# Windows-1252 assigns printable characters to most bytes 0x80-0x9F, where Latin-1 has C1
# controls; a text mangled "the Windows way" shows those (â€™ for ’). Undefined bytes stay
# as their Latin-1 control character, as sloppy decoders (and ftfy) treat them.
_CP1252_FROM_LATIN1 = {}
for _byte in range(0x80, 0xA0):
    try:
        _CP1252_FROM_LATIN1[_byte] = bytes([_byte]).decode("cp1252")
    except UnicodeDecodeError:
        pass


def word_shingles(text: str, ngram: int = 5) -> set[tuple[str, ...]]:
    """Word n-grams of the lower-cased, whitespace-split text (the demo's Jaccard measure)."""
    words = text.lower().split()
    return {tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)}


def jaccard(a: str, b: str, ngram: int = 5) -> float:
    sa, sb = word_shingles(a, ngram), word_shingles(b, ngram)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def edits_for_jaccard(shingles: int, target: float, ngram: int = 5) -> int:
    """Word substitutions k that bring (m - n·k) / (m + n·k) closest to `target`."""
    return max(1, round(shingles * (1.0 - target) / (ngram * (1.0 + target))))


def near_copy(text: str, target: float, rng: random.Random, ngram: int = 5) -> str:
    """`text` with whole-word substitutions chosen so its shingle Jaccard is about `target`.

    Layout (newlines, indentation) is kept; only alphabetic words are replaced, so other
    tokenisations (lower-cased `\\w+` words) see the same edits.
    """
    tokens = _TOKENS.split(text)
    word_slots = [i for i in range(0, len(tokens), 2) if tokens[i]]
    editable = [
        position
        for position in range(ngram - 1, len(word_slots) - ngram + 1)
        if _ALPHA_WORD.fullmatch(tokens[word_slots[position]])
    ]
    edits = edits_for_jaccard(len(word_slots) - ngram + 1, target, ngram)
    chosen: list[int] = []
    for position in rng.sample(editable, len(editable)):
        if all(abs(position - other) >= ngram for other in chosen):
            chosen.append(position)
            if len(chosen) == edits:
                break
    if len(chosen) < edits:
        raise ValueError(f"text of {len(word_slots)} words cannot take {edits} spaced edits")
    for position in sorted(chosen):
        slot = word_slots[position]
        original = tokens[slot].lower()
        tokens[slot] = rng.choice([w for w in REPLACEMENT_WORDS if w != original])
    return "".join(tokens)


def typographic(text: str) -> str:
    """Straight apostrophes and double quotes made curly, as word processors and CMSs do."""
    text = re.sub(r"(?<=\w)'(?=\w)", "’", text)
    return re.sub(r'"([^"\n]*)"', r"“\1”", text)


def mojibake(text: str, codec: str) -> str:
    """UTF-8 bytes of `text` read back as `codec` ('cp1252' or 'latin-1'): café -> cafÃ©."""
    misread = text.encode("utf-8").decode("latin-1")
    if codec == "cp1252":
        return misread.translate(_CP1252_FROM_LATIN1)
    if codec == "latin-1":
        return misread
    raise ValueError(f"mojibake codec must be 'cp1252' or 'latin-1', got {codec!r}")
