"""ftfy's mojibake detector, `ftfy.badness.is_bad`, at a fraction of its cost on clean text.

`is_bad` tries one large regex at every position of a line (~0.4 µs a character), and ftfy
calls it on every line that is not plain ASCII. But each branch of that regex must match at
least one character from a small set of non-ASCII characters (those mojibake is made of),
and no match is longer than a few characters. So the regex need only be tried in short
windows around those characters, and a line without any of them is not bad.

Both properties are read off ftfy's own regex at import. If a future ftfy breaks either,
`looks_bad` is `is_bad` itself, so the answer never differs from ftfy's.
"""

from __future__ import annotations

import re

from ftfy.badness import BADNESS_RE, is_bad

try:
    from re import _parser as sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse


def _members(op, av) -> set[int] | None:
    """The characters one regex item can match, when it is a plain literal or character
    class (no negation, no categories); None otherwise."""
    if op is sre_parse.LITERAL:
        return {av}
    if op is not sre_parse.IN:
        return None
    chars: set[int] = set()
    for item_op, item in av:
        if item_op is sre_parse.LITERAL:
            chars.add(item)
        elif item_op is sre_parse.RANGE:
            chars.update(range(item[0], item[1] + 1))
        else:  # NEGATE, CATEGORY: could match characters we do not list
            return None
    return chars


def _anchor_characters(pattern: re.Pattern) -> set[int] | None:
    """For each top-level branch, the smallest set of non-ASCII characters that one of its
    mandatory items matches: every match of the pattern contains one of them. None when
    some branch has no such item."""
    tree = sre_parse.parse(pattern.pattern, pattern.flags)
    if len(tree.data) == 1 and tree.data[0][0] is sre_parse.BRANCH:
        branches = tree.data[0][1][1]
    else:
        branches = [tree]
    anchors: set[int] = set()
    for branch in branches:
        candidates = [chars for op, av in branch.data
                      if (chars := _members(op, av)) and min(chars) >= 128]
        if not candidates:
            return None
        anchors |= min(candidates, key=len)
    return anchors


def char_class(codepoints: set[int]) -> re.Pattern:
    """A regex matching any one of `codepoints`."""
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codepoints)) + "]")


# The longest match: one containing the anchor at i lies inside [i - WIDTH + 1, i + WIDTH).
WIDTH = sre_parse.parse(BADNESS_RE.pattern, BADNESS_RE.flags).getwidth()[1]
_ANCHORS = _anchor_characters(BADNESS_RE) if WIDTH <= 64 else None
ANCHOR_RE = char_class(_ANCHORS) if _ANCHORS else None


def looks_bad(text: str) -> bool:
    """Exactly `ftfy.badness.is_bad(text)`, searching only near the anchor characters."""
    if ANCHOR_RE is None:
        return is_bad(text)
    start = end = -1
    for found in ANCHOR_RE.finditer(text):
        low, high = max(0, found.start() - WIDTH + 1), found.start() + WIDTH
        if low > end:  # a new window: search the previous one
            if end > start and BADNESS_RE.search(text, start, end):
                return True
            start = low
        end = high
    return end > start and BADNESS_RE.search(text, start, end) is not None
