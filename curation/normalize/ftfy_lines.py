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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def _fix_segment(segment: str, config: ftfy.TextFixerConfig) -> str:
    """What fix_text makes of one segment (a line with its "\n") under `config`."""
    if segment.isascii():
        if not FTFY_SENSITIVE_ASCII_RE.search(segment):
            return segment.replace("\r\n", "\n").replace("\r", "\n")
    elif (fixed := _quick_fix(segment, config)) is not None:
        return fixed
    return ftfy.fix_and_explain(segment, config).text


def fix_texts_by_line(texts: pa.Array, config: ftfy.TextFixerConfig) -> pa.Array:
    """`ftfy.fix_text(text, config)` for every text of a string array, without running
    ftfy on lines it cannot change.

    fix_text already fixes each line on its own (its "segments"); this walks the same
    segments with the same HTML-detection state (off from the first line holding a "<").
    A plain-ASCII line free of control characters (`\r` included) and entities is left
    as it is, decided for all lines at once; any other line gets the line-break fix ftfy
    would give it (plain ASCII) or, when straightening quotes is its only possible fix,
    that (`_quick_fix`), else ftfy itself.
    """
    texts = texts.cast(pa.large_string())
    if not len(texts):
        return texts
    long = np.asarray(pc.utf8_length(texts)) > config.max_decode_length
    lines = pc.split_pattern(texts, "\n")
    per_doc = np.diff(np.asarray(lines.offsets))
    doc = np.repeat(np.arange(len(texts)), per_doc)
    lines = lines.flatten()
    last = np.zeros(len(lines), dtype=bool)
    last[np.cumsum(per_doc) - 1] = True
    segments = pc.binary_join_element_wise(
        lines, pa.array(np.where(last, "", "\n"), pa.large_string()),
        pa.scalar("", pa.large_string()))
    clean = (np.asarray(pc.string_is_ascii(lines))
             & ~np.asarray(pc.match_substring_regex(lines, FTFY_SENSITIVE_ASCII))
             & ~np.asarray(pc.match_substring(lines, "\r")))
    html_off = np.zeros(len(lines), dtype=bool)
    if config.unescape_html == "auto":  # a "<" so far in the document: no unescaping
        seen = np.cumsum(np.asarray(pc.match_substring(lines, "<")))
        html_off = seen - np.concatenate([[0], seen])[np.cumsum(per_doc) - per_doc][doc] > 0
    todo = np.flatnonzero(~clean & ~long[doc])
    if len(todo):
        no_html = config._replace(unescape_html=False)
        fixed = [_fix_segment(seg, no_html if off else config) for seg, off in zip(
            segments.take(pa.array(todo)).to_pylist(), html_off[todo].tolist(), strict=True)]
        mask = np.zeros(len(lines), dtype=bool)
        mask[todo] = True
        segments = pc.replace_with_mask(segments, pa.array(mask),
                                        pa.array(fixed, pa.large_string()))
    offsets = np.concatenate([[0], np.cumsum(per_doc)])
    out = pc.binary_join(pa.LargeListArray.from_arrays(offsets, segments),
                         pa.scalar("", pa.large_string()))
    if long.any():
        rows = np.flatnonzero(long)
        whole = [ftfy.fix_text(t, config) for t in texts.take(pa.array(rows)).to_pylist()]
        out = pc.replace_with_mask(out, pa.array(long), pa.array(whole, pa.large_string()))
    return out


def fix_text_by_line(text: str, config: ftfy.TextFixerConfig) -> str:
    """`ftfy.fix_text(text, config)` for one text (see `fix_texts_by_line`)."""
    return fix_texts_by_line(pa.array([text], pa.large_string()), config)[0].as_py()
