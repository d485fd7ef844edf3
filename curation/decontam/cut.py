"""The MT-NLG cut: remove a task match with its surrounding sentences, keep the rest.

Megatron-LM's `filter_ngrams.py` scans a text for the first task n-gram, cuts from
`window` characters before the match (extended back to the previous `.`, `!` or `?`) to
`window` characters after it (extended forward to the next one), keeps the left piece
if it is longer than `min_piece` characters and rescans the right piece if it is longer
than `min_piece`. The right piece starts just after a punctuation mark, so its words are
exactly the original words from that offset on: rescanning it means taking the next
precomputed match that starts inside it, which lets all matches be found in one
vectorised pass and leaves only this cheap walk per contaminated document.

One deliberate difference: Megatron places the match end at start + len(" ".join(words))
(the normalised n-gram), which falls short of the real end when words are separated by
more than one character; we use the real character end of the last word.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SENTENCE_END = ".!?"


@dataclass(frozen=True)
class Match:
    start: int  # character offset of the first word
    end: int  # character offset just past the last word
    key: int  # index of the task key


@dataclass(frozen=True)
class Cut:
    """One applied match and the characters [removed_start, removed_end) it took away."""

    match: Match
    removed_start: int
    removed_end: int


def cut_text(
    text: str, matches: Sequence[Match], window: int = 200, min_piece: int = 200
) -> tuple[list[str], list[Cut]]:
    """The clean pieces of `text` and the cuts that produced them.

    `matches` are sorted by start (longest first on ties). Pieces plus removed spans
    tile the text exactly. Boundary rules follow Megatron's tool: the backward search
    stops at offset 0 without a sentence end (no left piece), the forward one at the
    text's end (no right piece).
    """
    pieces: list[str] = []
    cuts: list[Cut] = []
    cursor, next_match = 0, 0
    while True:
        while next_match < len(matches) and matches[next_match].start < cursor:
            next_match += 1
        if next_match == len(matches):
            pieces.append(text[cursor:])
            return pieces, cuts
        match = matches[next_match]
        left_end = _sentence_start(text, cursor, match.start - window)
        removed_start = cursor
        if left_end - cursor > min_piece:
            pieces.append(text[cursor:left_end])
            removed_start = left_end
        right_start = _sentence_end(text, match.end + window)
        if len(text) - right_start > min_piece:
            cuts.append(Cut(match, removed_start, right_start))
            cursor = right_start
        else:
            cuts.append(Cut(match, removed_start, len(text)))
            return pieces, cuts


def _sentence_start(text: str, lower: int, pos: int) -> int:
    """End (exclusive) of the left piece: just past the last sentence end at or before
    `pos` and after `lower` (the current piece's start), else `lower` (no left piece)."""
    while pos > lower and text[pos] not in SENTENCE_END:
        pos -= 1
    return pos + 1 if pos > lower else lower


def _sentence_end(text: str, pos: int) -> int:
    """Start of the right piece: just past the first sentence end at or after `pos`."""
    while pos < len(text) and text[pos] not in SENTENCE_END:
        pos += 1
    return min(pos + 1, len(text))
