"""The `select` stage on a real Dask cluster against a single-process reference."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.pipeline import run_stages
from curation.select.features import gumbel_noise, hashed_embeddings, token_counts
from curation.select.got import chunk_count, got_scores
from curation.spec import SpecError, parse_spec
from tests.conftest import write_jsonl

RIVER = ["river", "valley", "water", "bank", "mill", "fields", "snow", "bridge", "boat"]
CODE = ["int", "return", "void", "main", "struct", "printf", "char", "while", "for"]


def _text(words, rng, n):
    return " ".join(rng.choice(words, size=n))


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(7)
    mixed = RIVER + CODE
    write_jsonl(tmp_path / "web.jsonl", [
        {"id": f"w{i}", "text": _text(RIVER if i % 3 == 0 else mixed, rng, 10 + i % 17)}
        for i in range(30)])
    write_jsonl(tmp_path / "code.jsonl", [
        {"id": f"c{i}", "text": _text(CODE, rng, 12 + i % 5)} for i in range(12)])
    write_jsonl(tmp_path / "target.jsonl", [
        {"body": _text(RIVER, rng, 15)} for _ in range(8)])
    return tmp_path


def _spec(root, select, partition_rows=7):
    return parse_spec({
        "name": "sel", "seed": 11, "read": {"partition_rows": partition_rows},
        "sources": [{"name": "web", "paths": ["web.jsonl"], "id_field": "id"},
                    {"name": "code", "paths": ["code.jsonl"], "id_field": "id"}],
        "stages": {"select": select},
    }, base_dir=root)


def _run(root, select, client, partition_rows=7, out="out"):
    results = run_stages(_spec(root, select, partition_rows), root / out, client)
    folder = results[-1].folder
    kept = pd.concat([pq.read_table(p).to_pandas() for p in sorted((folder / "data").glob("*"))])
    ledger = pd.concat([pq.read_table(p).to_pandas()
                        for p in sorted((folder / "ledger").glob("*"))])
    return kept, ledger, folder


def _all_docs(root):
    rows = []
    for name in ("web", "code"):
        for line in (root / f"{name}.jsonl").read_text().splitlines():
            rows.append({"source": name, **json.loads(line)})
    return pd.DataFrame(rows)


GOT = {"method": "got", "target": {"paths": ["target.jsonl"], "text_field": "body"},
       "embedding": {"dims": 32}, "ot": {"reg": 0.1, "iters": 300, "chunk": 15}}


def test_got_chooses_the_budget_and_ledgers_the_rest_with_scores(corpus, dask_cluster_client):
    kept, ledger, _ = _run(corpus, {**GOT, "budget": {"docs": 10}}, dask_cluster_client)
    assert len(kept) == 10 and len(ledger) == 42 - 10
    assert set(kept["id"]).isdisjoint(ledger["id"])
    assert set(ledger["reason"]) == {"select.not_chosen"} and set(ledger["action"]) == {"removed"}
    ledger_scores = {i: json.loads(d)["score"] for i, d in zip(ledger["id"], ledger["detail"],
                                                                strict=True)}
    # single-process reference: the same chunks (position mod K) solved in one process
    docs = _all_docs(corpus)
    target = [json.loads(x)["body"] for x in (corpus / "target.jsonl").read_text().splitlines()]
    pool, tgt = hashed_embeddings(docs["text"].tolist(), 32), hashed_embeddings(target, 32)
    k = chunk_count(len(docs), 15)
    scores = np.empty(len(docs))
    for c in range(k):
        scores[c::k] = got_scores(pool[c::k], tgt, 0.1, 300)
    order = np.lexsort((np.arange(len(docs)), scores))
    assert set(kept["id"]) == set(docs["id"].iloc[order[:10]])
    for i, doc_id in enumerate(docs["id"]):
        if doc_id in ledger_scores:
            assert ledger_scores[doc_id] == pytest.approx(scores[i], abs=1e-9)
    # the target is river prose: GOT-D takes no pure-code document before river ones
    assert not any(kept["id"].str.startswith("c"))


def test_token_budget_takes_the_longest_prefix_within_it(corpus, dask_cluster_client):
    select = {"method": "random", "budget": {"tokens": 150}}
    kept, ledger, folder = _run(corpus, select, dask_cluster_client)
    docs = _all_docs(corpus)
    scores = -gumbel_noise(docs["id"], 11)
    tokens = token_counts(docs["text"].tolist())
    order = np.lexsort((np.arange(len(docs)), scores))
    n = int(np.searchsorted(np.cumsum(tokens[order]), 150, side="right"))
    assert set(kept["id"]) == set(docs["id"].iloc[order[:n]])
    assert tokens[order[:n]].sum() <= 150 < tokens[order[: n + 1]].sum()
    selection = json.loads((folder / "selection.json").read_text())
    assert selection["chosen_tokens"] == tokens[order[:n]].sum()
    assert len(kept) + len(ledger) == 42


def test_same_choice_on_one_worker_and_other_partitioning(corpus, dask_cluster_client):
    from dask.distributed import Client, LocalCluster

    for method in ({**GOT, "budget": {"docs": 9}},
                   {"method": "dsir", "target": GOT["target"], "budget": {"docs": 9}}):
        kept2, ledger2, _ = _run(corpus, method, dask_cluster_client, 7, f"o2-{method['method']}")
        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            kept1, ledger1, _ = _run(corpus, method, client, 1000, f"o1-{method['method']}")
        assert sorted(kept1["id"]) == sorted(kept2["id"])
        assert dict(zip(ledger1["id"], ledger1["detail"], strict=True)) == \
            dict(zip(ledger2["id"], ledger2["detail"], strict=True))


def test_only_scopes_the_selection_and_its_budget(corpus, dask_cluster_client):
    select = {"method": "dsir", "target": GOT["target"], "budget": {"docs": 4},
              "only": ["web"]}
    kept, ledger, _ = _run(corpus, select, dask_cluster_client)
    assert (kept["source"] == "web").sum() == 4
    assert (kept["source"] == "code").sum() == 12
    assert set(ledger["source"]) == {"web"} and len(ledger) == 26


@pytest.mark.parametrize("bad, problem", [
    ({"embedding": {"checkpoint": "ckpt/"}}, "embedding.checkpoint: "),
    ({"embedding": {"kind": "checkpoint"}}, "needs `checkpoint: PATH`"),
    ({"method": "dsir", "embedding": {"sentence_transformers": "m"}}, "is for method got"),
    ({"method": "got", "target": None}, "needs `target"),
    ({"budget": {"docs": 3, "tokens": 5}}, "exactly one"),
    ({"target": {"paths": ["missing.jsonl"]}}, "select target: no file matches"),
])
def test_bad_select_keys_are_spec_errors_naming_the_key(corpus, bad, problem):
    with pytest.raises(SpecError) as info:
        _spec(corpus, {**GOT, "budget": {"docs": 3}, **bad})
    assert any("select" in p and problem in p for p in info.value.problems), info.value.problems


def test_report_shows_chosen_and_not_chosen_scores_per_source(corpus, dask_cluster_client):
    from curation.pipeline import run_pipeline
    from curation.report import write_report

    select = {"method": "dsir", "target": GOT["target"], "budget": {"docs": 8}}
    out = corpus / "full"
    run_pipeline(_spec(corpus, select), out, dask_cluster_client)
    ledger = pd.concat([pq.read_table(p).to_pandas() for p in (out / "ledger").glob("*")])
    summary = json.loads((out / "selection.json").read_text())
    for source in ("web", "code"):
        assert summary["sources"][source]["not_chosen"]["docs"] == \
            int((ledger["source"] == source).sum())
    assert sum(s["chosen"]["docs"] for s in summary["sources"].values()) == 8
    web = summary["sources"]["web"]
    assert web["chosen"]["p50"] < web["not_chosen"]["p50"]
    text = write_report(out).read_text()
    section = text[text.index("Data selection"):]
    assert "| web | chosen |" in section and "| code | not chosen |" in section


def _inodes(folder, pattern):
    return {p.relative_to(folder): p.stat().st_ino for p in sorted(folder.glob(pattern))}


def _cut_off(folder, partitions):
    """Leave the stage as a run killed after those partitions' `run` had not finished."""
    (folder / "_manifest.json").unlink()
    for k in partitions:
        for sub in ("stats", "data", "ledger"):
            for p in (folder / sub).glob(f"*{k:05d}*"):
                p.unlink()


def test_rerun_after_a_cut_off_run_phase_keeps_the_finished_selection(corpus,
                                                                       dask_cluster_client):
    select = {**GOT, "budget": {"docs": 10}}
    kept, ledger, folder = _run(corpus, select, dask_cluster_client)
    prepared = _inodes(folder, "selection.json") | _inodes(folder, "*/part-*.npy")
    _cut_off(folder, [1, 4])
    kept2, ledger2, _ = _run(corpus, select, dask_cluster_client)
    assert _inodes(folder, "selection.json") | _inodes(folder, "*/part-*.npy") == prepared
    assert sorted(kept2["id"]) == sorted(kept["id"])
    assert sorted(ledger2["detail"]) == sorted(ledger["detail"])


def test_rerun_after_cut_off_features_redoes_only_the_missing_partitions(corpus,
                                                                        dask_cluster_client):
    select = {"method": "dsir", "target": GOT["target"], "budget": {"docs": 9}}
    kept, ledger, folder = _run(corpus, select, dask_cluster_client)
    (folder / "selection.json").unlink()
    for kind in ("tokens", "buckets", "scores"):
        (folder / kind / "part-00002.npy").unlink()
    for kind in ("scores",):
        (folder / kind / "part-00003.npy").unlink()
    finished = {k: v for k, v in _inodes(folder, "*/part-*.npy").items()}
    _cut_off(folder, range(6))
    kept2, ledger2, _ = _run(corpus, select, dask_cluster_client)
    now = _inodes(folder, "*/part-*.npy")
    assert {k: now[k] for k in finished} == finished
    assert {p.name for p in now if "00002" in p.name or "00003" in p.name} == \
        {"part-00002.npy", "part-00003.npy"}
    assert sorted(kept2["id"]) == sorted(kept["id"])
    assert sorted(ledger2["detail"]) == sorted(ledger["detail"])
