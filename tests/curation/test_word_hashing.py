"""hash_words (Arrow split, distinct words lowered and hashed once) gives exactly the hashes of
the per-text reference: Python's `\\w+` words, lower-cased by str.lower, hashed by pandas."""

from __future__ import annotations

import pydoc

import numpy as np
import pandas as pd

from curation.decontam.ngrams import WORD, hash_words


def reference(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    per_text = [[w.lower() for w in WORD.findall(t)] for t in texts]
    counts = [len(words) for words in per_text]
    flat = [w for words in per_text for w in words]
    hashes = pd.util.hash_array(np.asarray(flat, dtype=object)).astype(np.uint64) if flat \
        else np.zeros(0, dtype=np.uint64)
    return hashes, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def _same(texts):
    words = hash_words(texts)
    hashes, offsets = reference(texts)
    np.testing.assert_array_equal(words.offsets, offsets)
    np.testing.assert_array_equal(words.hashes, hashes)


def test_real_english_text_hashes_as_the_reference():
    texts = [pydoc.render_doc(name, renderer=pydoc.plaintext)
             for name in ("json", "re", "pathlib", "collections", "textwrap")]
    _same(texts + [t.upper() for t in texts])


def test_casing_and_word_boundaries_of_other_scripts():
    _same(["ΟΔΟΣ ΣΑΣ's ΣΑΣ", "İstanbul STRASSE straße ǅemal ﬁne", "", "  ,, ", "a_b 3.14 ½ x²",
           "हिन्दी भाषा", "日本語のテキスト", "Ⅻ ⅻ ⑫", "e\u0301te cafe\u0301", "中文，标点。",
           "tab\tnew\nline\r\nend", "emoji 🙂 here", "ﾊﾝｶｸ ＦＵＬＬ"])


def test_every_code_point_splits_where_python_splits():
    points = np.arange(0x110000, dtype="<u4")
    points = points[(points < 0xD800) | (points > 0xDFFF)]
    text = points.tobytes().decode("utf-32-le")
    _same([text[i:i + 100_000] for i in range(0, len(text), 100_000)])
