"""langdetect's shipped language profiles, turned into arrays for bulk scoring.

langdetect keeps, per language, the frequencies of character 1-, 2- and 3-grams. We load
those same JSON files once per process and build what a vectorised scorer needs: one
vocabulary of packed n-gram keys with a hash table over it, a (vocabulary x language)
matrix of smoothed log-probabilities, and lookup tables for langdetect's per-character
normalisation and its upper-case test, so no Python code runs per character when scoring.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import langdetect
import numpy as np
from langdetect.detector import Detector
from langdetect.utils.ngram import NGram

from curation.hashing import GOLDEN_GAMMA

PROFILE_DIR = Path(langdetect.__file__).parent / "profiles"
CODE_POINTS = 0x110000
BITS_PER_CHAR = 21  # every Unicode code point fits in 21 bits, so a 3-gram fits in 63
# langdetect smooths each n-gram probability by alpha / BASE_FREQ (alpha = 0.5).
SMOOTHING = Detector.ALPHA_DEFAULT / Detector.BASE_FREQ
# Log-probabilities are stored as integers in units of 2**-16. A document's score is then
# a sum of integer-valued float64s far below 2**53, which floating point adds exactly in
# any order: the same document scores to the same bits alone or inside any batch.
FIXED_POINT_SCALE = 2.0**16
# An n-gram counts at most this many nats against a language (e**4.5 ~ 90x less likely
# than in the best language): a few identifiers, names or foreign words must not
# outvote the rest of a document (+0.6% accuracy on the ftfy-repaired labelled sample).
MAX_NGRAM_PENALTY = 4.5
# Open-addressing hash table of the vocabulary: a few vectorised probes per n-gram are
# about twice as fast as a binary search over ~90,000 sorted keys.
HASH_MULTIPLIER = GOLDEN_GAMMA  # Fibonacci hashing
HASH_BITS = 18  # 262,144 slots: a load of about 1/3, so most look-ups end at one probe


@dataclass(frozen=True)
class LanguageProfiles:
    languages: np.ndarray  # (L,) object: language codes, sorted
    ngram_keys: np.ndarray  # (V,) uint64: packed n-grams, sorted ascending
    slot_keys: np.ndarray  # (2**HASH_BITS,) uint64: the key in each slot, 0 when empty
    slot_ids: np.ndarray  # (2**HASH_BITS,) int64: vocabulary id of that key
    log_probs: np.ndarray  # (V, L) float64: fixed-point log-probability, relative, clipped
    char_map: np.ndarray  # (CODE_POINTS,) uint32: langdetect's character normalisation
    is_upper: np.ndarray  # (CODE_POINTS,) bool: str.isupper of each code point


def _pack_ngram_keys(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """One uint64 per n-gram of code points; a 0 code point means "absent".

    Normalised text never contains code point 0 (it is mapped to a space), so 1-, 2- and
    3-grams pack to distinct keys: (0, 0, c), (0, b, c) and (a, b, c).
    """
    shift = np.uint64(BITS_PER_CHAR)
    keys = first.astype(np.uint64) << shift
    keys |= second.astype(np.uint64)
    keys <<= shift
    keys |= third.astype(np.uint64)
    return keys


def _home_slots(keys: np.ndarray) -> np.ndarray:
    return ((keys * HASH_MULTIPLIER) >> np.uint64(64 - HASH_BITS)).astype(np.intp)


def _hash_table(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert all keys by linear probing, one vectorised round per probe distance."""
    size = 1 << HASH_BITS
    if len(keys) * 2 > size:
        raise ValueError(f"{len(keys)} n-grams overflow a hash table of {size} slots")
    slot_keys = np.zeros(size, dtype=np.uint64)
    slot_ids = np.full(size, -1, dtype=np.int64)
    pending = np.arange(len(keys))
    slots = _home_slots(keys)
    while pending.size:
        free = slot_keys[slots[pending]] == 0
        # Of several keys wanting one free slot, the first (lowest id) takes it.
        taken, first = np.unique(slots[pending[free]], return_index=True)
        winners = pending[free][first]
        slot_keys[taken] = keys[winners]
        slot_ids[taken] = winners
        pending = pending[slot_ids[slots[pending]] != pending]
        slots[pending] = (slots[pending] + 1) & (size - 1)
    return slot_keys, slot_ids


def lookup_ngrams(profiles: LanguageProfiles, keys: np.ndarray) -> np.ndarray:
    """Vocabulary id of each packed n-gram, -1 where no profile has it.

    The first probe runs over all keys at once; only the few that landed on another
    key's slot probe on, one vectorised round per step.
    """
    mask = len(profiles.slot_keys) - 1
    slots = _home_slots(keys)
    held = profiles.slot_keys.take(slots)
    hit = held == keys
    ids = np.where(hit, profiles.slot_ids.take(slots), -1)
    active = np.flatnonzero(~hit & (held != 0))  # an empty slot ends the probe: absent
    slots = slots[active]
    while active.size:
        slots = (slots + 1) & mask
        held = profiles.slot_keys.take(slots)
        hit = held == keys[active]
        ids[active[hit]] = profiles.slot_ids.take(slots[hit])
        probe_on = ~hit & (held != 0)
        active, slots = active[probe_on], slots[probe_on]
    return ids


def _pack_strings(ngrams: list[str]) -> np.ndarray:
    padded = np.zeros((len(ngrams), 3), dtype=np.uint32)
    for row, gram in enumerate(ngrams):
        padded[row, 3 - len(gram) :] = [ord(ch) for ch in gram]
    return _pack_ngram_keys(padded[:, 0], padded[:, 1], padded[:, 2])


def _character_tables() -> tuple[np.ndarray, np.ndarray]:
    """langdetect normalises only Basic Multilingual Plane blocks; above it is identity."""
    bmp = 0x10000
    char_map = np.arange(CODE_POINTS, dtype=np.uint32)
    char_map[:bmp] = [ord(NGram.normalize(chr(cp))) for cp in range(bmp)]
    is_upper = np.array([chr(cp).isupper() for cp in range(CODE_POINTS)], dtype=bool)
    return char_map, is_upper


@functools.cache
def load_profiles(profile_dir: Path = PROFILE_DIR) -> LanguageProfiles:
    """Read every profile once per process (about a second) and keep the arrays."""
    profiles = []
    for path in sorted(p for p in profile_dir.iterdir() if not p.name.startswith(".")):
        data = json.loads(path.read_text(encoding="utf-8"))
        profiles.append((data["name"], data["freq"], data["n_words"]))
    if len(profiles) < 2:
        raise ValueError(f"{profile_dir}: need at least two langdetect profiles")

    ngrams = sorted({gram for _, freq, _ in profiles for gram in freq if 1 <= len(gram) <= 3})
    index = {gram: i for i, gram in enumerate(ngrams)}
    probs = np.zeros((len(ngrams), len(profiles)), dtype=np.float64)
    for lang, (_, freq, n_words) in enumerate(profiles):
        grams = [g for g in freq if 1 <= len(g) <= 3]
        rows = np.fromiter((index[g] for g in grams), dtype=np.int64, count=len(grams))
        counts = np.fromiter((freq[g] for g in grams), dtype=np.float64, count=len(grams))
        totals = np.array([n_words[len(g) - 1] for g in grams], dtype=np.float64)
        probs[rows, lang] = counts / totals
    log_probs = np.log(probs + SMOOTHING)
    log_probs = np.maximum(log_probs - log_probs.max(axis=1, keepdims=True), -MAX_NGRAM_PENALTY)
    log_probs = np.round(log_probs * FIXED_POINT_SCALE)

    keys = _pack_strings(ngrams)
    order = np.argsort(keys)
    keys, log_probs = keys[order], np.ascontiguousarray(log_probs[order])
    slot_keys, slot_ids = _hash_table(keys)
    char_map, is_upper = _character_tables()
    return LanguageProfiles(
        languages=np.array([name for name, _, _ in profiles], dtype=object),
        ngram_keys=keys,
        slot_keys=slot_keys,
        slot_ids=slot_ids,
        log_probs=log_probs,
        char_map=char_map,
        is_upper=is_upper,
    )
