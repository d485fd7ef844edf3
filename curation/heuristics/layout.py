"""Where the words and lines of a whole partition lie, found on its UTF-8 bytes with numpy.

Every rule measures words (whitespace-separated), lines (split on "\\n") or paragraphs
(lines between blank lines), mostly trimmed. Cutting a partition into millions of small
Arrow strings and running a kernel per piece was most of the heuristics stage's cost;
here a few passes over the bytes find each word's byte range and each line's words, so a
trimmed line runs from its first word's start to its last word's end, and most rules
become byte comparisons and counts. Strings are built only where a rule needs them
(stop words, repetition), for the documents still being judged.

Whitespace is exactly the set of Arrow's `utf8_split_whitespace` / `utf8_trim_whitespace`
(Python's `str.isspace`; a test holds them equal over every code point). Which code points
are letters is asked of the same regex engine (`\\pL`) the rules used before, once per
distinct code point.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curation.heuristics.pieces import Pieces

WHITESPACE = tuple(c for c in range(0x3001) if chr(c).isspace())
_MULTIBYTE_WS = np.array([c for c in WHITESPACE if c >= 0x80], dtype=np.uint32)
# Whitespace that a paragraph break (`\n[ \t\r\f\v]*\n`) may not hold, besides the
# multi-byte kinds.
_ASCII_NON_BREAK_WS = (0x1C, 0x1D, 0x1E, 0x1F)
_LETTER = np.zeros(0x110000, dtype=np.int8)  # per code point: 0 not asked yet, 1 letter, -1 not


def _letters(codes: np.ndarray) -> np.ndarray:
    """Per code point: is it a letter (`\\pL`)? Asked of Arrow's regex engine once per
    code point a process meets."""
    unknown = np.unique(codes[_LETTER[codes] == 0])
    if len(unknown):
        chars = pa.array([chr(c) for c in unknown.tolist()], type=pa.large_string())
        is_letter = np.asarray(pc.match_substring_regex(chars, r"\pL"), dtype=bool)
        _LETTER[unknown] = np.where(is_letter, 1, -1)
    return _LETTER[codes] == 1


def _decode(data: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The code points of the multi-byte UTF-8 sequences starting at `leads`."""
    last = len(data) - 1
    b = [data[np.minimum(leads + k, last)].astype(np.uint32) for k in range(4)]
    cont = [x & 0x3F for x in b[1:]]
    two = ((b[0] & 0x1F) << 6) | cont[0]
    three = ((b[0] & 0x0F) << 12) | (cont[0] << 6) | cont[1]
    four = ((b[0] & 0x07) << 18) | (cont[0] << 12) | (cont[1] << 6) | cont[2]
    return np.where(b[0] < 0xE0, two, np.where(b[0] < 0xF0, three, four))


def _code_points(data: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The code points of the characters starting at byte positions `at`."""
    codes = data[at].astype(np.uint32)
    wide = codes >= 0x80
    codes[wide] = _decode(data, at[wide])
    return codes


def _interleaved(data: pa.Buffer, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    bounds = np.empty(2 * len(starts) + 1, dtype=np.int64)
    bounds[0] = 0
    bounds[1::2], bounds[2::2] = starts, ends
    return pa.LargeStringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), data)


def ranges_array(data: pa.Buffer, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The strings data[starts[i]:ends[i]] (ordered, disjoint byte ranges) as one array."""
    if not len(starts):
        return pa.array([], type=pa.large_string())
    spans = _interleaved(data, starts, ends)  # the ranges and the gaps between them
    return spans.take(pa.array(np.arange(1, len(spans), 2)))


@dataclass(frozen=True)
class DocWords:
    """The words of some documents of a layout (`docs`, ascending) as text: per word its
    document among `docs`, its id (equal words, equal ids, numbered in order of first
    occurrence, as `dictionary_encode` numbers them) into `distinct`, and its index among
    all the layout's words."""

    docs: np.ndarray
    doc: np.ndarray
    n_docs: int
    ids: np.ndarray
    distinct: pa.Array
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.doc)

    def subset(self, docs: np.ndarray) -> DocWords:
        """The words of those of `docs` given by their number among `docs` (ascending)."""
        renumber = np.full(self.n_docs, -1, dtype=np.int64)
        renumber[docs] = np.arange(len(docs))
        keep = renumber[self.doc] >= 0
        ids, used = pd.factorize(self.ids[keep])
        return DocWords(self.docs[docs], renumber[self.doc[keep]], len(docs), ids,
                        self.distinct.take(pa.array(used)), self.index[keep])


class TextLayout:
    """The words and lines of `texts` (a large_string array without nulls)."""

    def __init__(self, texts: pa.Array):
        self.texts = texts
        self.n_docs = len(texts)
        offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)
        offsets = offsets[texts.offset : texts.offset + len(texts) + 1]
        base, size = int(offsets[0]), int(offsets[-1] - offsets[0])
        self.offsets = offsets - base
        buffer = texts.buffers()[2]
        self.buffer = buffer.slice(base, size) if buffer is not None else pa.py_buffer(b"")
        self.data = np.frombuffer(self.buffer, dtype=np.uint8)
        self._find_words()
        self._find_lines()

    def _find_words(self) -> None:
        data = self.data
        self._non_ascii = np.flatnonzero(data >= 0x80)
        ws = data == 32
        ws |= (data - np.uint8(9)) < 5  # \t \n \v \f \r
        separators = (data - np.uint8(_ASCII_NON_BREAK_WS[0])) < len(_ASCII_NON_BREAK_WS)
        self._ascii_non_break_ws = np.flatnonzero(separators)
        ws |= separators
        leads = self._non_ascii[data[self._non_ascii] >= 0xC0]
        codes = _decode(data, leads)
        spaces = np.isin(codes, _MULTIBYTE_WS)
        self._multibyte_ws = leads[spaces]
        for k in range(3):
            ws[(self._multibyte_ws + k)[codes[spaces] >= (0x80, 0x80, 0x800)[k]]] = True
        self._char_leads, self._char_codes = leads[~spaces], codes[~spaces]
        self._ws = ws
        cut = np.ones(len(data) + 1, dtype=bool)  # a run of (non-)whitespace starts here
        np.not_equal(ws[1:], ws[:-1], out=cut[1:-1])
        cut[self.offsets] = True
        runs = np.flatnonzero(cut)
        word = ~ws[runs[:-1]]
        self.word_start, self.word_end = runs[:-1][word], runs[1:][word]

    def _find_lines(self) -> None:
        newline = np.flatnonzero(self.data == 10)
        starts, ends = self.offsets[:-1], self.offsets[1:]
        per_doc = np.searchsorted(newline, ends) - np.searchsorted(newline, starts) + 1
        self.line_doc = np.repeat(np.arange(self.n_docs), per_doc)
        self.line_start = np.sort(np.concatenate([starts, newline + 1]))
        self.line_end = np.sort(np.concatenate([newline, ends]))
        self.line_words = np.searchsorted(self.word_start, self.line_end) - np.searchsorted(
            self.word_start, self.line_start)
        self.word_line = np.repeat(np.arange(self.n_lines), self.line_words)
        self.word_doc = self.line_doc[self.word_line]
        self.line_first_word = np.cumsum(self.line_words) - self.line_words
        self.line_last_word = self.line_first_word + self.line_words - 1

    @property
    def n_lines(self) -> int:
        return len(self.line_start)

    @property
    def n_words(self) -> int:
        return len(self.word_start)

    @cached_property
    def word_chars(self) -> np.ndarray:
        """Characters (code points) per word."""
        cont = self._non_ascii[(self.data[self._non_ascii] & 0xC0) == 0x80]
        cont = cont[~self._ws[cont]]
        word = np.searchsorted(self.word_start, cont, side="right") - 1
        return (self.word_end - self.word_start) - np.bincount(word, minlength=self.n_words)

    @cached_property
    def word_has_letter(self) -> np.ndarray:
        """Per word: does it hold a letter (`\\pL`)?"""
        if not self.n_words:
            return np.zeros(0, dtype=bool)
        ascii_letter = (np.bitwise_or(self.data, 0x20) - np.uint8(ord("a"))) < 26
        # Between a word and the next lies only whitespace, which holds no letter.
        has = np.logical_or.reduceat(ascii_letter, self.word_start)
        leads = self._char_leads[_letters(self._char_codes)]
        has[np.searchsorted(self.word_start, leads, side="right") - 1] = True
        return has

    def count_per_doc(self, piece: str) -> np.ndarray:
        """Per document: non-overlapping occurrences of `piece`, one non-whitespace
        character, once (`"#"`) or repeated (`"..."`), as `count_substring` counts them."""
        char = ord(piece[0])
        if piece != piece[0] * len(piece) or piece[0].isspace():
            raise ValueError(f"{piece!r} is not one non-whitespace character repeated")
        if char < 0x80:
            at = np.flatnonzero(self.data == char)
        else:
            at = self._char_leads[self._char_codes == char]
        doc = np.searchsorted(self.offsets, at, side="right") - 1
        if len(piece) > 1:  # runs of the character: each holds len(run) // len(piece)
            step = len(chr(char).encode())
            starts = np.flatnonzero(np.diff(at, prepend=-step - 1) != step)
            starts = np.union1d(starts, np.flatnonzero(np.diff(doc, prepend=-1) != 0))
            runs = np.diff(np.append(starts, len(at)))
            return np.bincount(doc[starts], weights=(runs // len(piece)).astype(np.float64),
                               minlength=self.n_docs)
        return np.bincount(doc, minlength=self.n_docs).astype(np.float64)

    def any_word_per_line(self, flags: np.ndarray) -> np.ndarray:
        """Per line: does any of its words have `flags`?"""
        return np.bincount(self.word_line[flags], minlength=self.n_lines) > 0

    def per_doc(self, of: str, weights: np.ndarray | None = None,
                where: np.ndarray | None = None) -> np.ndarray:
        """Per document: how many words (`of="word"`) or lines (`"line"`), or the sum of
        `weights` over them; only those `where` is true when given."""
        doc = self.word_doc if of == "word" else self.line_doc
        if where is not None:
            doc = doc[where]
            weights = None if weights is None else weights[where]
        return np.bincount(doc, weights=weights, minlength=self.n_docs).astype(np.float64)

    @cached_property
    def _trim_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-blank lines, and the byte range of each once trimmed."""
        has = self.line_words > 0
        return (has, self.word_start[self.line_first_word[has]],
                self.word_end[self.line_last_word[has]])

    @cached_property
    def _edge_chars(self) -> tuple[np.ndarray, np.ndarray]:
        """The code point each non-blank line starts and ends with, once trimmed."""
        _, start, end = self._trim_bounds
        last = end - 1
        for _ in range(3):  # back over continuation bytes to the last character's start
            inside = (self.data[last] & 0xC0) == 0x80
            last[inside] -= 1
        return _code_points(self.data, start), _code_points(self.data, last)

    def line_ends_with(self, suffix: str) -> np.ndarray:
        """Per line: does it end with `suffix` once trimmed (False for blank lines)?"""
        has, start, end = self._trim_bounds
        out = np.zeros(self.n_lines, dtype=bool)
        if len(suffix) == 1:
            out[has] = self._edge_chars[1] == ord(suffix)
            return out
        code = np.frombuffer(suffix.encode(), dtype=np.uint8)
        found = end - start >= len(code)
        first = end - len(code)
        for k, byte in enumerate(code):  # UTF-8: equal bytes at the end, equal characters
            found[found] = self.data[first[found] + k] == byte
        out[has] = found
        return out

    def line_starts_with_one_of(self, chars: str) -> np.ndarray:
        """Per line: does it start with one of the characters `chars` once trimmed?"""
        has, _, _ = self._trim_bounds
        out = np.zeros(self.n_lines, dtype=bool)
        out[has] = np.isin(self._edge_chars[0], [ord(c) for c in chars])
        return out

    def lines_holding(self, byte: int) -> np.ndarray:
        """The lines (ascending) that contain the ASCII character `byte`."""
        at = np.flatnonzero(self.data == byte)
        return np.unique(np.searchsorted(self.line_start, at, side="right") - 1)

    def lines(self, which: np.ndarray) -> pa.Array:
        """The untrimmed text of the lines `which` (ascending)."""
        return ranges_array(self.buffer, self.line_start[which], self.line_end[which])

    def _chosen(self, doc: np.ndarray, docs: np.ndarray | None):
        """Which of the pieces of documents `doc` belong to `docs`, and their document
        numbers among `docs` (everything, unchanged, when `docs` is None)."""
        if docs is None:
            return slice(None), doc, self.n_docs
        renumber = np.full(self.n_docs, -1, dtype=np.int64)
        renumber[docs] = np.arange(len(docs))
        keep = renumber[doc] >= 0
        return keep, renumber[doc[keep]], len(docs)

    def doc_words(self, docs: np.ndarray) -> DocWords:
        """The words of the documents `docs` (ascending) as text."""
        keep, doc, n_docs = self._chosen(self.word_doc, docs)
        index = np.arange(self.n_words)[keep]
        encoded = pc.dictionary_encode(
            ranges_array(self.buffer, self.word_start[index], self.word_end[index]))
        return DocWords(np.asarray(docs), doc, n_docs, np.asarray(encoded.indices, np.int64),
                        encoded.dictionary, index)

    def _spans(self, first_word, last_word, docs) -> Pieces:
        keep, doc, n_docs = self._chosen(self.word_doc[first_word], docs)
        first_word, last_word = first_word[keep], last_word[keep]
        values = ranges_array(self.buffer, self.word_start[first_word], self.word_end[last_word])
        return Pieces(values, doc, n_docs)

    def trimmed_lines(self, docs: np.ndarray | None = None) -> Pieces:
        """The non-blank lines, trimmed (of the documents `docs`, renumbered)."""
        has = self.line_words > 0
        return self._spans(self.line_first_word[has], self.line_last_word[has], docs)

    def trimmed_paragraphs(self, docs: np.ndarray | None = None) -> Pieces:
        """The non-blank paragraphs, trimmed. Paragraphs are split at `\\n[ \\t\\r\\f\\v]*\\n`:
        at every line of only those characters that is neither first nor last in its
        document (of several such lines in a row, the ones the regex skips hold nothing
        and would only add blank paragraphs)."""
        first_line = np.ones(self.n_lines, dtype=bool)
        first_line[1:] = self.line_doc[1:] != self.line_doc[:-1]
        last_line = np.ones(self.n_lines, dtype=bool)
        last_line[:-1] = first_line[1:]
        other = np.concatenate([self._ascii_non_break_ws, self._multibyte_ws])
        breaks = (self.line_words == 0) & ~first_line & ~last_line
        breaks[np.searchsorted(self.line_start, other, side="right") - 1] = False
        word_group = (np.cumsum(breaks | first_line) - 1)[self.word_line]
        first = np.flatnonzero(np.diff(word_group, prepend=-1) != 0)
        last = np.append(first[1:], self.n_words) - 1
        return self._spans(first, last, docs)
