"""normalize: repair broken Unicode (ftfy), compose it (NFC), and tidy whitespace.

The result is defined by the plain per-document function `normalize_text`:
`ftfy.fix_text` (its default fixes) → NFC → `clean_whitespace`. The stage gives the same
text faster. Most documents are plain ASCII, and on ASCII `fix_text` can only
(a) unescape HTML entities like `&amp;`, (b) drop control characters and terminal escapes,
(c) turn `\\r\\n` and `\\r` into `\\n`; NFC never changes ASCII. ASCII documents without
(a) and (b) therefore skip ftfy and NFC entirely — (c) is redone by the whitespace rules —
and those rules run as vectorised Arrow regexes over the whole partition. In the other
documents ftfy runs line by line, as fix_text does, and only on lines where it could do more
than straighten quotes (ftfy_lines.py).

Whitespace rules, in order ("horizontal space" = tab, VT, FF and the Unicode space
separators, NBSP included; newline is not one):
1. `\\r\\n`, then any remaining `\\r`, become `\\n`;
2. horizontal space at the end of every line is removed;
3. four or more consecutive newlines (three or more blank lines) become three (two blank);
4. horizontal space and newlines at the start and end of the document are removed.

Ledger: a changed document gets a `modified` row whose reason is `unicode_fixed` (ftfy or
NFC changed more than line breaks), `whitespace` (the rules above, line-break fixes
included, changed it) or `unicode_fixed+whitespace`; one left empty is `removed` as
`empty_text`. Details carry `chars_before` / `chars_after`.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curation.stages.base import Decided, Modified, Removed, ScopedConfig, Stage

if TYPE_CHECKING:
    import ftfy  # imported where it runs (the workers), not by every spec reader

HORIZONTAL_SPACE = (
    "\t\x0b\x0c \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"
)
_TRAILING_SPACE = "[" + HORIZONTAL_SPACE + "]+\n"
_MANY_NEWLINES = "\n{4,}"


class NormalizeConfig(ScopedConfig):
    fix_unicode: bool = True  # ftfy.fix_text: mojibake, HTML entities, curly quotes, controls
    nfc: bool = True  # Unicode NFC composition
    whitespace: bool = True  # the whitespace rules in this module's docstring


def clean_whitespace(text: str) -> str:
    """The whitespace rules, one document at a time (the reference for the Arrow version)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip(HORIZONTAL_SPACE) for line in text.split("\n"))
    text = re.sub(_MANY_NEWLINES, "\n\n\n", text)
    return text.strip(HORIZONTAL_SPACE + "\n")


def _ftfy_config(config: NormalizeConfig) -> ftfy.TextFixerConfig:
    # With nfc on this is exactly fix_text's default; with it off, ftfy must not NFC either.
    # ftfy is imported where it runs (the workers), not by every process that reads a spec.
    import ftfy

    return ftfy.TextFixerConfig(normalization="NFC" if config.nfc else None, explain=False)


def normalize_text(text: str, config: NormalizeConfig | None = None) -> str:
    """What normalize makes of one document: the slow, obviously-correct definition."""
    config = config or NormalizeConfig()
    if config.fix_unicode:
        import ftfy

        text = ftfy.fix_text(text, _ftfy_config(config))
    if config.nfc:
        text = unicodedata.normalize("NFC", text)
    if config.whitespace:
        text = clean_whitespace(text)
    return text


def _rewrite_where(texts: pa.Array, found: pa.Array, rewrite) -> pa.Array:
    """`rewrite` applied only to the texts where `found` (finding is cheaper than
    rewriting, and most texts need nothing)."""
    if not pc.any(found).as_py():
        return texts
    return pc.replace_with_mask(texts, found, rewrite(texts.filter(found)))


def _line_breaks(texts: pa.Array) -> pa.Array:
    """`\r\n`, then any other `\r`, become `\n`."""
    return _rewrite_where(texts, pc.match_substring(texts, "\r"), lambda t: pc.replace_substring(
        pc.replace_substring(t, "\r\n", "\n"), "\r", "\n"))


def clean_whitespace_arrow(texts: pa.Array) -> pa.Array:
    """`clean_whitespace` over a whole Arrow string array at once."""
    texts = _line_breaks(texts)
    for pattern, replacement in ((_TRAILING_SPACE, "\n"), (_MANY_NEWLINES, "\n\n\n")):
        texts = _rewrite_where(texts, pc.match_substring_regex(texts, pattern), lambda t, p=pattern,
                               r=replacement: pc.replace_substring_regex(t, p, r))
    return pc.utf8_trim(texts, HORIZONTAL_SPACE + "\n")


def _needs_unicode_pass(texts: pa.Array, config: NormalizeConfig) -> np.ndarray:
    """Documents the per-document ftfy/NFC pass could change (all others are skipped)."""
    if not (config.fix_unicode or config.nfc):
        return np.zeros(len(texts), dtype=bool)
    needs = pc.invert(pc.string_is_ascii(texts))
    if config.fix_unicode:
        from curation.normalize.ftfy_lines import FTFY_SENSITIVE_ASCII

        needs = pc.or_(needs, pc.match_substring_regex(texts, FTFY_SENSITIVE_ASCII))
    return _to_numpy(needs)


def _to_numpy(mask: pa.Array) -> np.ndarray:
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


class NormalizeStage(Stage):
    """Kept: every document with non-empty normalised text; `modified` rows say what changed."""

    name = "normalize"
    config_class = NormalizeConfig

    def _fix_unicode(self, texts: pa.Array) -> pa.Array:
        if self.config.fix_unicode:
            from curation.normalize.ftfy_lines import fix_texts_by_line

            # NFC inside when config.nfc
            return fix_texts_by_line(texts, _ftfy_config(self.config))
        return pa.array([unicodedata.normalize("NFC", t) for t in texts.to_pylist()],
                        type=pa.large_string())

    def run(self, docs: pd.DataFrame, part: int, workdir: Path) -> Decided:
        config = self.config
        before = pa.array(docs["text"].to_numpy(dtype=object), type=pa.large_string())
        slow = _needs_unicode_pass(before, config)
        before_eol = _line_breaks(before)
        # On the ASCII documents skipped here, fix_text would only have fixed line breaks.
        fixed = before_eol if config.fix_unicode else before
        fixed_eol = before_eol
        if slow.any():
            repaired = self._fix_unicode(before.filter(pa.array(slow)))
            fixed = pc.replace_with_mask(fixed, pa.array(slow), repaired)
            fixed_eol = pc.replace_with_mask(before_eol, pa.array(slow), _line_breaks(repaired))
        after = clean_whitespace_arrow(fixed) if config.whitespace else fixed

        unicode_fixed = _to_numpy(pc.not_equal(fixed_eol, before_eol))
        whitespace = _to_numpy(pc.or_(pc.not_equal(after, fixed_eol),
                                      pc.not_equal(before_eol, before)))
        changed = _to_numpy(pc.not_equal(after, before))
        chars_before = pc.utf8_length(before).to_numpy()
        chars_after = pc.utf8_length(after).to_numpy()
        empty = chars_after == 0

        modified = changed & ~empty
        names = np.array(["", "whitespace", "unicode_fixed", "unicode_fixed+whitespace"])
        reasons = names[unicode_fixed[modified] * 2 + whitespace[modified]]
        details = [{"chars_before": int(b), "chars_after": int(a)}
                   for b, a in zip(chars_before[modified], chars_after[modified], strict=True)]
        kept = docs.loc[~empty].copy()
        kept["text"] = after.filter(pa.array(~empty)).to_pandas().to_numpy()
        return Decided(kept, [
            Removed(docs.loc[empty], "empty_text",
                    [{"chars_before": int(c)} for c in chars_before[empty]]),
            Modified(docs.loc[modified], list(reasons), details),
        ])
