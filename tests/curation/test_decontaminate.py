"""Decontamination against a plain, literal re-reading of Megatron-LM's filter_ngrams."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation.decontam.summary import summarize_decontamination
from curation.documents import LEDGER_COLUMNS
from curation.stage_context import ClusterStageContext
from curation.stages.decontaminate import DecontaminateConfig, DecontaminateStage
from curation.tasks.files import read_task_texts
from tests.curation.driver_guard import forbid_data_reads

FILLER_WORDS = (
    "river garden window market winter silver morning ladder pocket candle harbor meadow "
    "lantern forest bottle castle engine pillow mirror blanket rocket violin basket shadow "
    "bridge valley island planet thunder feather marble compass saddle kettle orchard"
).split()
TASK_WORDS = (
    "quasar nebula photon proton neutron lepton boson quark gluon pulsar magnetar comet "
    "asteroid meteor eclipse zenith nadir equinox solstice perihelion aphelion parallax"
).split()


# ---------------------------------------------------------------- reference (plain Python)


def ref_words(text):
    return [(m.group().lower(), m.start(), m.end()) for m in re.finditer(r"\w+", text)]


def ref_keys(task_texts, n=13, min_words=8):
    keys = set()
    for text in task_texts:
        words = [w for w, _, _ in ref_words(text)]
        if len(words) >= n:
            keys.update(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        elif len(words) >= min_words:
            keys.add(tuple(words))
    return keys


def ref_document_counts(texts, keys):
    """Per key: how many texts contain it (Megatron's filter_ngrams.py counts documents)."""
    counts = Counter()
    lengths = {len(k) for k in keys}
    for text in texts:
        words = [w for w, _, _ in ref_words(text)]
        counts.update({tuple(words[i : i + n]) for n in lengths
                       for i in range(len(words) - n + 1)} & keys)
    return counts


def ref_first_match(text, keys):
    words = ref_words(text)
    for i in range(len(words)):
        for n in sorted({len(k) for k in keys}, reverse=True):
            if i + n <= len(words) and tuple(w for w, _, _ in words[i : i + n]) in keys:
                return words[i][1], words[i + n - 1][2]
    return None


def ref_pieces(text, keys, window=200, min_piece=200):
    """Megatron's loop: find the first match, cut around it, rescan the right piece."""
    pieces, queue = [], [text]
    while queue:
        current = queue.pop(0)
        found = ref_first_match(current, keys)
        if found is None:
            pieces.append(current)
            continue
        start, end = found
        pos = start - window
        while pos > 0 and current[pos] not in ".!?":
            pos -= 1
        first = current[: pos + 1] if pos > 0 else ""
        if len(first) > min_piece:
            pieces.append(first)
        pos = end + window
        while pos < len(current) and current[pos] not in ".!?":
            pos += 1
        second = current[pos + 1 :] if pos + 1 < len(current) else ""
        if len(second) > min_piece:
            queue.append(second)
    return pieces


def ref_decontaminate(texts, task_texts, max_matches=10, max_splits=10):
    """{index: new text or None (dropped)} for every document the reference changes."""
    keys = ref_keys(task_texts)
    counts = ref_document_counts(texts, keys)
    active = {k for k in keys if 0 < counts[k] < max_matches}
    changed = {}
    for i, text in enumerate(texts):
        if ref_first_match(text, active) is None:
            continue
        pieces = ref_pieces(text, active)
        changed[i] = None if not pieces or len(pieces) > max_splits else "\n\n".join(pieces)
    return changed


# ---------------------------------------------------------------- crafted corpus


def filler(rng, chars):
    sentences = []
    while sum(len(s) + 1 for s in sentences) < chars:
        words = rng.choices(FILLER_WORDS, k=rng.randint(5, 11))
        sentences.append(" ".join(words).capitalize() + rng.choice(".!?"))
    return " ".join(sentences)


def task_texts(rng):
    long_a = " ".join(rng.choices(TASK_WORDS, k=40))
    long_b = " ".join(rng.choices(TASK_WORDS, k=30))
    common = " ".join(rng.choices(TASK_WORDS, k=13))
    short = " ".join(rng.choices(TASK_WORDS, k=10))  # 8..12 words: one whole key
    tiny = " ".join(rng.choices(TASK_WORDS, k=5))  # under 8 words: ignored
    return {"a": [long_a, common, tiny], "b": [long_b, short]}


def words_of(text, start, count):
    return " ".join(text.split()[start : start + count])


def crafted_corpus(rng, tasks):
    a, common, tiny = tasks["a"]
    b, short = tasks["b"]
    gram_a, gram_b = words_of(a, 3, 13), words_of(b, 10, 13)
    f = lambda n: filler(rng, n)  # noqa: E731
    docs = {
        "clean": f(1500),
        "start": gram_a + " " + f(900),
        "middle": f(700) + " " + gram_b + " " + f(700),
        "end": f(700) + " " + gram_a + ".",
        "overlap": f(600) + " " + words_of(a, 0, 20) + ". " + f(600),
        "two_far": f(500) + " " + gram_a + ". " + f(900) + " " + gram_b + " " + f(500),
        "many_splits": " ".join(f(900) + " " + words_of(a, k, 13) + "." for k in range(13))
        + " " + f(900),
        "short_pieces": f(150) + " " + gram_b + " " + f(150),
        "short_left": f(150) + " " + gram_a + " " + f(900),
        "short_task": f(600) + " " + short + " " + f(600),
        "tiny_task": f(600) + " " + tiny + " " + f(600),
        "case_punct": f(600) + " " + ", ".join(w.upper() for w in gram_b.split()) + " " + f(600),
        "no_sentence_end": " ".join(rng.choices(FILLER_WORDS, k=120)) + " " + gram_b + " "
        + " ".join(rng.choices(FILLER_WORDS, k=120)),
    }
    # One page repeating a task 13-gram more often than the cap: one document, not common.
    docs["one_page_repeats"] = f(400) + " " + (words_of(b, 0, 13) + ". ") * 11 + f(400)
    for k in range(12):  # the `common` 13-gram is everywhere: above the frequency cap
        docs[f"common_{k}"] = f(400) + " " + common + " " + f(400)
    return docs


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def write_tasks(tmp_path, tasks):
    paths = {}
    for name, texts in tasks.items():
        path = tmp_path / "tasks" / f"{name}.jsonl"
        path.parent.mkdir(exist_ok=True)
        rows = [{"question": t, "context": None} for t in texts]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        paths[name] = path
    return paths


def run_stage(tmp_path, client, docs: pd.DataFrame, config: DecontaminateConfig, n_parts=3):
    spec = SimpleNamespace(name="t", seed=1, base_dir=tmp_path, sources=[])
    parts = []
    for i in range(n_parts):
        path = tmp_path / "in" / f"part-{i}.parquet"
        path.parent.mkdir(exist_ok=True)
        docs.iloc[i::n_parts].to_parquet(path)
        parts.append(path)
    workdir = tmp_path / "stages" / "07_decontaminate"
    stage = DecontaminateStage(config, spec)
    stage.prepare(ClusterStageContext(spec, tmp_path, workdir, parts, client))
    outputs = [stage.process(pd.read_parquet(p), i, workdir) for i, p in enumerate(parts)]
    kept = pd.concat([o.kept for o in outputs], ignore_index=True)
    ledger = pd.concat([o.ledger for o in outputs], ignore_index=True)
    return kept, ledger, workdir


def config_for(task_paths):
    return DecontaminateConfig(
        tasks=[{"name": name, "paths": [f"tasks/{p.name}"], "fields": ["question", "context"]}
               for name, p in task_paths.items()]
    )


# ---------------------------------------------------------------- tests


def test_matches_reference_on_crafted_documents(tmp_path, client):
    rng = random.Random(7)
    tasks = task_texts(rng)
    corpus = crafted_corpus(rng, tasks)
    docs = pd.DataFrame({"id": list(corpus), "source": "web", "text": list(corpus.values()),
                         "meta": "{}"})
    kept, ledger, _ = run_stage(tmp_path, client, docs, config_for(write_tasks(tmp_path, tasks)))

    expected = ref_decontaminate(list(corpus.values()), [t for ts in tasks.values() for t in ts])
    expected = {list(corpus)[i]: v for i, v in expected.items()}
    # the planted cases behave as designed (so the comparison below is not vacuous)
    assert expected["many_splits"] is None and expected["short_pieces"] is None
    assert {"start", "middle", "end", "overlap", "two_far", "short_left", "short_task",
            "case_punct", "no_sentence_end", "one_page_repeats"} <= set(expected)
    assert not any(k.startswith(("common_", "clean", "tiny")) for k in expected)

    assert list(ledger.columns) == LEDGER_COLUMNS
    assert len(kept) + (ledger["action"] == "removed").sum() == len(docs)
    got_removed = set(ledger.loc[ledger["action"] == "removed", "id"])
    assert got_removed == {k for k, v in expected.items() if v is None}
    texts = dict(zip(kept["id"], kept["text"], strict=True))
    for doc_id, original in corpus.items():
        if doc_id in got_removed:
            continue
        assert texts[doc_id] == expected.get(doc_id, original), doc_id
    modified = set(ledger.loc[ledger["action"] == "modified", "id"])
    assert modified == {k for k, v in expected.items() if v is not None}
    reasons = dict(zip(ledger["id"], ledger["reason"], strict=True))
    assert reasons["many_splits"] == "contaminated_too_many_splits"
    assert reasons["short_pieces"] == "contaminated_nothing_left"


def test_ledger_details_and_summary(tmp_path, client):
    rng = random.Random(11)
    tasks = task_texts(rng)
    corpus = crafted_corpus(rng, tasks)
    docs = pd.DataFrame({"id": list(corpus), "source": "web", "text": list(corpus.values()),
                         "meta": "{}"})
    _, ledger, workdir = run_stage(tmp_path, client, docs,
                                   config_for(write_tasks(tmp_path, tasks)), n_parts=2)
    middle = json.loads(ledger.set_index("id").loc["middle", "detail"])
    (cut,) = middle["cuts"]
    gram_b = words_of(tasks["b"][0], 10, 13)
    assert cut["tasks"] == ["b"] and cut["ngram"] == gram_b
    start, end = cut["match"]
    assert corpus["middle"][start:end] == gram_b
    lo, hi = cut["removed"]
    assert lo <= start - 200 and hi >= end + 200
    assert middle["chars_removed"] == hi - lo

    counts = json.loads((workdir / "ngram_counts.json").read_text())
    assert counts["keys_over_cap"] == 1  # the planted common 13-gram

    summary = summarize_decontamination(ledger, tmp_path / "decontamination.json")
    on_disk = json.loads((tmp_path / "decontamination.json").read_text())
    assert on_disk == summary
    hit_b = {i for i, d in zip(ledger["id"], ledger["detail"], strict=True)
             if any("b" in c["tasks"] for c in json.loads(d)["cuts"])}
    assert summary["tasks"]["b"]["documents_hit"] == len(hit_b)
    # short_pieces, and no_sentence_end (no '.', '!' or '?' to stop either side of the cut)
    assert summary["tasks"]["b"]["documents_dropped"] == 2
    assert summary["tasks"]["a"]["documents_dropped"] == 1  # many_splits
    # middle, two_far, short_pieces, case_punct, no_sentence_end
    assert summary["tasks"]["b"]["top_ngrams"][0] == {"ngram": gram_b, "count": 5}
    assert summary["tasks"]["a"]["characters_removed"] > 0


def test_summary_of_a_ledger_folder_is_added_up_on_the_workers(tmp_path, client, monkeypatch):
    """Each ledger file is summarised on a worker: this process reads none of them and
    gets the summary the whole ledger gives."""
    rng = random.Random(11)
    tasks = task_texts(rng)
    corpus = crafted_corpus(rng, tasks)
    docs = pd.DataFrame({"id": list(corpus), "source": "web", "text": list(corpus.values()),
                         "meta": "{}"})
    _, ledger, _ = run_stage(tmp_path, client, docs, config_for(write_tasks(tmp_path, tasks)),
                             n_parts=2)
    whole = summarize_decontamination(ledger, tmp_path / "whole.json")
    folder = tmp_path / "ledger"
    folder.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(ledger)), 3)):
        ledger.iloc[rows].to_parquet(folder / f"{k:02d}_decontaminate-part-{k:05d}.parquet")
    forbid_data_reads(monkeypatch)
    assert summarize_decontamination(folder, tmp_path / "split.json", client=client) == whole


def test_chars_removed_tile_the_document(tmp_path, client):
    rng = random.Random(3)
    tasks = task_texts(rng)
    corpus = crafted_corpus(rng, tasks)
    docs = pd.DataFrame({"id": list(corpus), "source": "web", "text": list(corpus.values()),
                         "meta": "{}"})
    kept, ledger, _ = run_stage(tmp_path, client, docs, config_for(write_tasks(tmp_path, tasks)),
                                n_parts=1)
    texts = dict(zip(kept["id"], kept["text"], strict=True))
    for doc_id, detail in zip(ledger["id"], ledger["detail"], strict=True):
        info = json.loads(detail)
        if "chars_removed" in info:
            kept_chars = len(texts[doc_id]) - 2 * (info["pieces"] - 1)
            assert kept_chars + info["chars_removed"] == len(corpus[doc_id])


def test_bad_task_files_name_the_place(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"question": "fine"}\n{"other": 1}\n')
    with pytest.raises(ValueError, match=r"t\.jsonl: row 2: task field 'question' is missing"):
        read_task_texts(path, ["question"])
    path.write_text('{"question": 5}\n')
    with pytest.raises(ValueError, match=r"row 1: task field 'question' must be text"):
        read_task_texts(path, ["question"])
    parquet = tmp_path / "t.parquet"
    pd.DataFrame({"q": ["one two", None], "alts": [["x y"], ["z"]]}).to_parquet(parquet)
    assert read_task_texts(parquet, ["q", "alts"]) == ["one two", "x y", "z"]


def test_config_validation():
    with pytest.raises(ValueError, match="unique"):
        DecontaminateConfig(tasks=[{"name": "a", "paths": ["x"], "fields": ["q"]}] * 2)
    with pytest.raises(ValueError, match="extra"):
        DecontaminateConfig(tasks=[{"name": "a", "paths": ["x"], "fields": ["q"]}], ngrams=5)
