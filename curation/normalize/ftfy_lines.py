"""`ftfy.fix_text`, with the same output, without running ftfy on the lines it cannot change.

fix_text fixes each line on its own (its "segments"), and most lines need nothing: plain
ASCII can only gain line-break fixes unless it holds control characters or HTML entities,
and a line of clean accented or foreign text can at most have its curly quotes
straightened. Which lines those are is decided from ftfy's own tables and its own mojibake
detector (mojibake_scan.py), so the shortcut gives exactly what ftfy would.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy
from ftfy import chardata
from ftfy.fixes import uncurl_quotes

from curation.normalize.mojibake_scan import char_class, looks_bad

# ASCII that ftfy.fix_text would change beyond line breaks: the control characters it
# removes (terminal escapes start with one) and anything shaped like an HTML entity.
FTFY_SENSITIVE_ASCII = r"[\x00-\x08\x0b\x0e-\x1f\x7f]|&#?[0-9A-Za-z]{1,24};"
FTFY_SENSITIVE_ASCII_RE = re.compile(FTFY_SENSITIVE_ASCII)


def _ftfy_trigger_codepoints() -> set[int]:
    """Every character that one of fix_text's character-level fixers other than
    `uncurl_quotes` acts on, from ftfy's own tables: entities ('&'), C1 controls, ligatures,
    full/half-width forms, line and paragraph separators, surrogates, escapes and the
    control characters it drops."""
    codepoints = {ord("&"), ord("\r"), 0x1B, 0x2028, 0x2029}
    codepoints |= set(range(0x80, 0xA0)) | set(range(0xD800, 0xE000))
    for table in (chardata.LIGATURES, chardata.WIDTH_MAP, chardata.CONTROL_CHARS):
        codepoints |= set(table)
    return codepoints


_FTFY_TRIGGER_RE = char_class(_ftfy_trigger_codepoints())


def _quick_fix(segment: str, config: ftfy.TextFixerConfig) -> str | None:
    """What `ftfy.fix_and_explain` makes of a segment whose only possible fix is straightening
    quotes, or None when it could do more (then ftfy itself must run).

    Its first pass changes nothing but the quotes when the segment has no character another
    fixer acts on and ftfy's mojibake detector (`is_bad`, which gates its encoding repair;
    `looks_bad` is the same test, faster) does not flag it; its second pass changes nothing
    when the straightened text is not flagged either and is in the normal form."""
    if _FTFY_TRIGGER_RE.search(segment) or looks_bad(segment):
        return None
    fixed = uncurl_quotes(segment) if config.uncurl_quotes else segment
    if fixed != segment and looks_bad(fixed):
        return None
    if config.normalization is not None and not unicodedata.is_normalized(
            config.normalization, fixed):
        return None
    return fixed


def fix_text_by_line(text: str, config: ftfy.TextFixerConfig) -> str:
    """`ftfy.fix_text(text, config)`, without running ftfy on lines it cannot change.

    fix_text already fixes each line on its own (its "segments"); this walks the same
    segments with the same HTML-detection state. A plain-ASCII line free of control
    characters and entities gets only the line-break fix ftfy would give it; any other line
    whose only possible fix is straightening quotes gets that (`_quick_fix`).
    """
    if len(text) > config.max_decode_length:
        return ftfy.fix_text(text, config)  # fix_text would cut the segments differently
    parts = text.split("\n")
    last = len(parts) - 1
    out = []
    for i, line in enumerate(parts):
        segment = line + "\n" if i < last else line
        if not segment:
            continue
        if config.unescape_html == "auto" and "<" in segment:
            config = config._replace(unescape_html=False)
        if segment.isascii():
            if not FTFY_SENSITIVE_ASCII_RE.search(segment):
                out.append(segment.replace("\r\n", "\n").replace("\r", "\n"))
                continue
        elif (fixed := _quick_fix(segment, config)) is not None:
            out.append(fixed)
            continue
        out.append(ftfy.fix_and_explain(segment, config).text)
    return "".join(out)
