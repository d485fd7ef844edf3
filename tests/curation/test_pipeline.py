"""The DAG end to end on a small planted corpus: accounting, determinism, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.pipeline import run_pipeline
from curation.spec import parse_spec
from tests.conftest import write_jsonl
from tests.curation.driver_guard import submitted_tasks

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly box "
         "jackdaws and the curious river keeps running past old stone bridges").split()


def sentence(i: int) -> str:
    words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(12)]
    return " ".join(words).capitalize() + f" number {i}."


def write_corpus(root: Path) -> set[str]:
    """Two sources with cross-source duplicates and malformed records; returns all ids."""
    a = [{"id": f"a{i}", "text": f"{sentence(i)} {sentence(i + 1)}"} for i in range(40)]
    b = [{"text": f"{sentence(i)} {sentence(i + 1)}"} for i in range(30, 60)]  # 30..39 dup a
    b += ["{not json", {"title": "no text"}, {"text": 42}]
    a[5]["text"] = "  Caf\u00c3\u00a9 au lait   \r\n\r\n\r\n\r\nis fine. " + a[5]["text"]
    write_jsonl(root / "a" / "part1.jsonl", a[:25])
    write_jsonl(root / "a" / "part2.jsonl", a[25:])
    write_jsonl(root / "b" / "all.jsonl", b)
    ids = {r["id"] for r in a}
    ids |= {f"b/all.jsonl/{row}" for row in range(len(b))}
    return ids


def make_spec(root: Path, partition_rows: int = 7):
    data = {
        "name": "planted", "seed": 7,
        "sources": [
            {"name": "a", "paths": ["a/*.jsonl"], "id_field": "id", "priority": 10},
            {"name": "b", "paths": ["b/*.jsonl"], "priority": 1},
        ],
        "read": {"partition_rows": partition_rows},
        "stages": {"normalize": {}, "exact_dedup": {}},
    }
    return parse_spec(data, base_dir=root)


def read_dir(folder: Path) -> pd.DataFrame:
    files = sorted(folder.rglob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def curated(out: Path) -> pd.DataFrame:
    return read_dir(out / "curated").sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


@pytest.fixture(scope="module")
def first_run(corpus, dask_cluster_client, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("out")
    results = run_pipeline(make_spec(root), out, dask_cluster_client)
    return out, results


def test_every_input_document_is_curated_or_in_the_ledger(corpus, first_run):
    _, ids = corpus
    out, _ = first_run
    kept = curated(out)
    ledger = read_dir(out / "ledger")
    removed = ledger[ledger["action"] == "removed"]
    assert not kept["id"].duplicated().any() and not removed["id"].duplicated().any()
    assert set(kept["id"]).isdisjoint(removed["id"])
    assert set(kept["id"]) | set(removed["id"]) == ids
    reasons = dict(zip(removed["id"], removed["reason"], strict=True))
    assert reasons["b/all.jsonl/30"] == "bad_json"
    assert reasons["b/all.jsonl/31"] == "missing_text"
    assert reasons["b/all.jsonl/32"] == "text_not_string"


def test_stage_totals_chain(first_run):
    out, results = first_run
    previous_kept = None
    for result in results:
        t = result.totals
        assert t["docs_in"] == t["kept"] + t["removed"]
        for counts in t["by_source"].values():
            assert counts["docs_in"] == counts["kept"] + counts["removed"]
        if previous_kept is not None:
            assert t["docs_in"] == previous_kept
        previous_kept = t["kept"]
    assert [r.name for r in results] == ["read", "normalize", "exact_dedup"]
    assert results[-1].totals["removed"] == 10  # b's copies of a30..a39


def test_priority_decides_which_copy_survives(first_run):
    out, _ = first_run
    ledger = read_dir(out / "ledger")
    dups = ledger[ledger["reason"] == "exact_duplicate"]
    assert set(dups["source"]) == {"b"}
    keepers = {json.loads(d)["keeper"] for d in dups["detail"]}
    assert keepers == {f"a{i}" for i in range(30, 40)}


def test_normalize_repairs_and_ledgers_modifications(first_run):
    out, _ = first_run
    kept = curated(out).set_index("id")
    assert kept.loc["a5", "text"].startswith("Café au lait\n\n\nis fine.")
    ledger = read_dir(out / "ledger")
    assert "a5" in set(ledger.loc[ledger["action"] == "modified", "id"])


def test_output_layout(first_run):
    out, _ = first_run
    assert (out / "spec.yaml").read_text().startswith("# frozen by `curate run`")
    for name in ("00_read", "01_normalize", "05_exact_dedup"):
        manifest = json.loads((out / "stages" / name / "_manifest.json").read_text())
        assert manifest["complete"] and len(manifest["key"]) == 64
    assert sorted(p.name for p in (out / "curated").iterdir() if p.is_dir()) == ["a", "b"]


def test_one_and_two_workers_give_identical_curated_content(corpus, first_run,
                                                            tmp_path):
    from curation.cluster import dask_client

    root, _ = corpus
    with dask_client(workers=1, quiet=True) as client:
        run_pipeline(make_spec(root), tmp_path / "one", client)
    pd.testing.assert_frame_equal(curated(tmp_path / "one"), curated(first_run[0]))


def test_partitioning_does_not_change_the_result(corpus, first_run, dask_cluster_client,
                                                 tmp_path):
    root, _ = corpus
    run_pipeline(make_spec(root, partition_rows=1000), tmp_path / "big", dask_cluster_client)
    pd.testing.assert_frame_equal(curated(tmp_path / "big"), curated(first_run[0]))


def test_the_driver_submits_no_more_tasks_for_more_partitions(corpus, dask_cluster_client,
                                                             tmp_path, monkeypatch):
    """Per-partition work is batched into a few tasks per worker (curation.batches), so
    3x the partitions cost the `curate` process about the same number of tasks."""
    root, _ = corpus
    keys = submitted_tasks(monkeypatch)
    run_pipeline(make_spec(root, partition_rows=8), tmp_path / "few", dask_cluster_client)
    few = len(keys)
    keys.clear()
    run_pipeline(make_spec(root, partition_rows=2), tmp_path / "many", dask_cluster_client)
    parts = len(list((tmp_path / "many" / "stages" / "01_normalize" / "data").glob("*")))
    assert parts >= 3 * len(list((tmp_path / "few" / "stages" / "01_normalize" / "data")
                                 .glob("*")))
    assert len(keys) <= few + 4, (few, len(keys))
    pd.testing.assert_frame_equal(curated(tmp_path / "many"), curated(tmp_path / "few"))


def test_rerun_skips_finished_stages_and_finishes_a_cut_stage(corpus, dask_cluster_client,
                                                              tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    spec = make_spec(root)
    run_pipeline(spec, out, dask_cluster_client)
    before = curated(out)
    normalize_manifest = out / "stages" / "01_normalize" / "_manifest.json"
    stamp = normalize_manifest.stat().st_mtime_ns
    # Cut exact_dedup off mid-stage: no manifest, half of its partitions unfinished.
    dedup = out / "stages" / "05_exact_dedup"
    (dedup / "_manifest.json").unlink()
    stats = sorted((dedup / "stats").glob("*.json"))
    for path in stats[::2]:
        path.unlink()
        (dedup / "data" / path.with_suffix(".parquet").name).unlink()
    kept_stats = {p: p.stat().st_mtime_ns for p in stats[1::2]}
    results = run_pipeline(spec, out, dask_cluster_client)
    assert normalize_manifest.stat().st_mtime_ns == stamp
    assert [r.skipped for r in results[1:]] == [True, False]
    assert all(p.stat().st_mtime_ns == t for p, t in kept_stats.items())
    pd.testing.assert_frame_equal(curated(out), before)
    ledger = read_dir(out / "ledger")
    assert not ledger.duplicated(["id", "stage"]).any()


def test_changed_parameters_redo_the_stage_and_what_follows(corpus, dask_cluster_client,
                                                            tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    run_pipeline(make_spec(root), out, dask_cluster_client)
    spec = make_spec(root).model_copy(update={"seed": 8})
    spec._base_dir = root
    results = run_pipeline(spec, out, dask_cluster_client)
    assert results[0].skipped  # reading does not depend on the seed
    assert not any(r.skipped for r in results[1:])


def test_a_stage_that_runs_again_says_why(corpus, dask_cluster_client, tmp_path, capsys):
    import shutil

    root, _ = corpus
    data = tmp_path / "data"
    shutil.copytree(root, data)
    out = tmp_path / "out"
    run_pipeline(make_spec(data), out, dask_cluster_client)
    assert "rerun:" not in capsys.readouterr().err  # a first run is not a rerun

    def rerun(spec, **kw) -> list[str]:
        run_pipeline(spec, out, dask_cluster_client, **kw)
        return [line for line in capsys.readouterr().err.splitlines() if "rerun:" in line]

    changed = make_spec(data).model_copy(update={"stages": make_spec(data).stages.model_copy(
        update={"exact_dedup": make_spec(data).stages.exact_dedup.model_copy(
            update={"ignore_case_and_space": True})})})
    changed._base_dir = data
    assert rerun(changed) == [
        "exact_dedup: rerun: parameters changed (config.ignore_case_and_space)"]
    reseeded = make_spec(data).model_copy(update={"seed": 8})
    reseeded._base_dir = data
    assert rerun(reseeded) == ["normalize: rerun: parameters changed (seed)",
                               "exact_dedup: rerun: parameters changed "
                               "(config.ignore_case_and_space, seed)"]
    with open(data / "b" / "all.jsonl", "a") as f:
        f.write('{"text": "One more document, appended to an input file."}\n')
    assert rerun(reseeded) == ["read: rerun: input files changed",
                               "normalize: rerun: its input changed (an earlier stage reran)",
                               "exact_dedup: rerun: its input changed (an earlier stage reran)"]
    assert rerun(reseeded, force=True) == [f"{name}: rerun: forced (--force)"
                                           for name in ("read", "normalize", "exact_dedup")]


def test_no_files_written_when_the_spec_is_invalid(tmp_path):
    from curation.cli import main as curate

    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nsources: [{name: a, paths: ['nothing/*.jsonl']}]\n")
    out = tmp_path / "out"
    assert curate(["run", str(spec), "--out", str(out), "--workers", "1"]) == 2
    assert not out.exists()
    assert os.listdir(tmp_path) == ["bad.yaml"]
