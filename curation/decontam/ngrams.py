"""Word n-grams as 64-bit hashes, computed for many texts at once.

Decontamination compares every n-gram of the corpus with every n-gram of the evaluation
tasks. Both sides go through the same two vectorised steps: all lower-cased `\\w+` words
of a batch of texts are hashed in one call, then each n-gram's hash is folded from its
words' hashes with numpy (one pass per word of the n-gram, never a Python loop per
token). The task side becomes one sorted array of unique keys that workers search with
`np.searchsorted`; it is small to ship and fast to probe.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from curation.hashing import GOLDEN_GAMMA, splitmix64

WORD = re.compile(r"\w+")
_SEPARATOR = "\x00"  # never part of a \w+ word, never produced by str.lower()
_MULTIPLIER = GOLDEN_GAMMA
MAX_TASKS = 64  # task membership is a 64-bit mask per key


@dataclass
class Words:
    """Hashed words of a batch of texts: text i owns hashes[offsets[i]:offsets[i + 1]]."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len(texts) + 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


def lowered_words(text: str) -> list[str]:
    """The words of one text as decontamination sees them."""
    return [w.lower() for w in WORD.findall(text)]


@lru_cache(maxsize=1)
def _non_word_runs() -> str:
    """An RE2 pattern for runs of non-word characters, where "word character" is exactly what
    Python's `\\w` matches under this interpreter's Unicode database (its ranges are read
    off `re` once per process), so Arrow splits texts where `WORD.findall` would."""
    points = np.arange(0x110000, dtype="<u4")
    points = points[(points < 0xD800) | (points > 0xDFFF)]  # surrogates are not text
    every_char = points.tobytes().decode("utf-32-le")
    ranges = [(int(points[m.start()]), int(points[m.end() - 1]))
              for m in WORD.finditer(every_char)]
    return "[^" + "".join(f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges) + "]+"


def hash_words(texts: Sequence[str]) -> Words:
    """Hash every lower-cased `\\w+` word of every text, vectorised over the batch.

    Arrow splits all texts at once (the words of `WORD.findall`) and dictionary-encodes the
    words; only the distinct words are lower-cased (by Python, as `str.lower` does it) and
    hashed, and every occurrence takes its word's hash by index."""
    array = pa.array(texts if isinstance(texts, pa.Array) else list(texts),
                     type=pa.large_string())
    pieces = pc.split_pattern_regex(array, _non_word_runs())
    flat = pieces.flatten()
    nonempty = pc.greater(pc.binary_length(flat), 0)  # splitting leaves "" at the ends
    owner = np.repeat(np.arange(len(array)),
                      pc.list_value_length(pieces).fill_null(0).to_numpy(zero_copy_only=False))
    counts = np.bincount(owner[nonempty.to_numpy(zero_copy_only=False)], minlength=len(array))
    offsets = np.zeros(len(array) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] == 0:
        return Words(np.zeros(0, dtype=np.uint64), offsets)
    encoded = pc.dictionary_encode(flat.filter(nonempty))
    # The separator is neither cased nor case-ignorable: each word lowers as on its own.
    distinct = _SEPARATOR.join(encoded.dictionary.to_pylist()).lower().split(_SEPARATOR)
    hashes = pd.util.hash_array(np.asarray(distinct, dtype=object)).astype(np.uint64, copy=False)
    return Words(hashes[encoded.indices.to_numpy(zero_copy_only=False)], offsets)


def ngram_hashes(words: Words, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every n-gram that lies inside one text.

    Returns (hashes, starts): `starts` are flat word indices into `words.hashes`. The
    length n is folded into the hash, so an 8-word key never equals a 13-gram's hash.
    """
    total = len(words.hashes)
    if total < n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    m = total - n + 1
    h = np.full(m, (n * int(_MULTIPLIER)) % 2**64, dtype=np.uint64)
    for j in range(n):
        h = (h ^ words.hashes[j : j + m]) * _MULTIPLIER
        h ^= h >> np.uint64(29)
    h = splitmix64(h)
    text_of_word = np.repeat(np.arange(len(words.counts)), words.counts)
    starts = np.arange(m, dtype=np.int64)
    inside = starts + n <= words.offsets[text_of_word[:m] + 1]
    return h[inside], starts[inside]


@dataclass
class TaskTable:
    """The task keys workers search: sorted unique hashes, their lengths and owners.

    `owners[i]` has bit t set when task `names[t]` contains key i; `lengths` lists the
    n-gram lengths present (the n-gram size, and 8..12 for short whole-text keys).
    """

    keys: np.ndarray  # uint64, sorted, unique
    owners: np.ndarray  # uint64 bit mask per key
    lengths: tuple[int, ...]
    names: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    def _prefilter(self) -> tuple[np.ndarray, np.uint64]:
        """A bit per hash prefix (>= 16 bits per key): most corpus n-grams miss here with
        one cache-friendly probe, and only the rest pay for a binary search."""
        cached = getattr(self, "_bits", None)
        if cached is None:
            log2 = int(min(max(20, np.ceil(np.log2(max(len(self.keys), 1) * 16))), 33))
            shift = np.uint64(64 - log2)
            bits = np.zeros(1 << (log2 - 3), dtype=np.uint8)
            prefix = self.keys >> shift
            np.bitwise_or.at(bits, prefix >> np.uint64(3),
                             np.left_shift(1, prefix & np.uint64(7)).astype(np.uint8))
            cached = self._bits = (bits, shift)
        return cached

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Index of each hash in `keys`, or -1 where it is not a task key."""
        result = np.full(len(hashes), -1, dtype=np.int64)
        if len(self.keys) == 0 or len(hashes) == 0:
            return result
        bits, shift = self._prefilter()
        prefix = hashes >> shift
        maybe = np.flatnonzero((bits[prefix >> np.uint64(3)] >> (prefix & np.uint64(7))) & 1)
        candidates = hashes[maybe]
        idx = np.searchsorted(self.keys, candidates)
        idx[idx == len(self.keys)] = 0
        found = self.keys[idx] == candidates
        result[maybe[found]] = idx[found]
        return result

    def tasks_of(self, key_index: int) -> list[str]:
        mask = int(self.owners[key_index])
        return [name for t, name in enumerate(self.names) if mask >> t & 1]

    def subset(self, selected: np.ndarray) -> TaskTable:
        """The table restricted to the keys where `selected` (bool mask) is true."""
        return TaskTable(self.keys[selected], self.owners[selected], self.lengths,
                         list(self.names))

    def save(self, path: Path) -> None:
        np.savez(
            path,
            keys=self.keys,
            owners=self.owners,
            lengths=np.asarray(self.lengths, dtype=np.int64),
            names=np.asarray(self.names, dtype=str),
        )

    @classmethod
    def load(cls, path: Path) -> TaskTable:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                keys=data["keys"],
                owners=data["owners"],
                lengths=tuple(int(n) for n in data["lengths"]),
                names=[str(s) for s in data["names"]],
            )


def build_task_table(
    tasks: Sequence[tuple[str, Sequence[str]]], ngram: int = 13, min_task_words: int = 8
) -> TaskTable:
    """Every `ngram`-gram of every task text; a text of min_task_words..ngram-1 words is
    one whole key of its own length; shorter texts are too generic to match on."""
    if len(tasks) > MAX_TASKS:
        raise ValueError(f"decontaminate: at most {MAX_TASKS} tasks, got {len(tasks)}")
    keys, owners = [], []
    lengths: set[int] = set()
    for t, (_, texts) in enumerate(tasks):
        words = hash_words(texts)
        task_keys, _ = ngram_hashes(words, ngram)
        if len(task_keys):
            lengths.add(ngram)
        for n in range(min_task_words, ngram):
            whole = np.flatnonzero(words.counts == n)
            if len(whole) == 0:
                continue
            hashes, starts = ngram_hashes(words, n)
            task_keys = np.concatenate([task_keys, hashes[np.isin(starts, words.offsets[whole])]])
            lengths.add(n)
        keys.append(task_keys)
        owners.append(np.full(len(task_keys), np.uint64(1) << np.uint64(t), dtype=np.uint64))
    all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
    all_owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.uint64)
    order = np.argsort(all_keys, kind="stable")
    all_keys, all_owners = all_keys[order], all_owners[order]
    unique, first = np.unique(all_keys, return_index=True)
    merged = np.bitwise_or.reduceat(all_owners, first) if len(first) else all_owners
    return TaskTable(unique, merged.astype(np.uint64), tuple(sorted(lengths)),
                     [name for name, _ in tasks])


@dataclass
class Matches:
    """Task-key occurrences in a batch of texts, sorted by (text, start, longest first)."""

    text: np.ndarray  # int64 index of the text in the batch
    start: np.ndarray  # int64 word index inside that text
    length: np.ndarray  # int64 words in the key
    key: np.ndarray  # int64 index into the table's keys


def find_matches(texts: Sequence[str], table: TaskTable) -> Matches:
    """Every occurrence of every task key in `texts`, found with vectorised probes."""
    words = hash_words(texts)
    parts = []
    for n in table.lengths:
        hashes, starts = ngram_hashes(words, n)
        key = table.lookup(hashes)
        hit = key >= 0
        parts.append((starts[hit], np.full(int(hit.sum()), n, dtype=np.int64), key[hit]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return Matches(empty, empty, empty, empty)
    flat_start = np.concatenate([p[0] for p in parts])
    length = np.concatenate([p[1] for p in parts])
    key = np.concatenate([p[2] for p in parts])
    text = np.searchsorted(words.offsets, flat_start, side="right") - 1
    start = flat_start - words.offsets[text]
    order = np.lexsort((-length, start, text))
    return Matches(text[order], start[order], length[order], key[order])
