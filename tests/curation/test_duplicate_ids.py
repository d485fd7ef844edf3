"""Ids from `id_field` that repeat: the first copy stays, later ones are ledgered (or stop).

Before this check, two records with one id both vanished in exact dedup and three crashed it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.cli import main as curate
from curation.duplicate_ids import later_copies
from curation.pipeline import run_pipeline
from curation.spec import parse_spec
from tests.conftest import write_jsonl


def text(i: int) -> str:
    return f"Document number {i} says something of its own about river stones and bridges."


def write_corpus(root: Path) -> list[dict]:
    """Two sources, id `x` twice within a file (same text), `y` three times (within a file,
    across files, across sources), `z` across sources; returns every record with its place."""
    files = {
        root / "a" / "1.jsonl": [
            {"id": "x", "text": text(1)}, {"id": "u1", "text": text(2)},
            {"id": "x", "text": text(1)}, {"id": "y", "text": text(3)},
            {"id": "y", "text": text(4)},
        ],
        root / "a" / "2.jsonl": [
            {"id": "u2", "text": text(5)}, {"id": "y", "text": text(3)},
            {"id": "z", "text": text(6)},
        ],
        root / "b" / "1.jsonl": [
            {"id": "z", "text": text(7)}, {"id": "y", "text": text(8)},
            {"id": "u3", "text": text(9)},
        ],
    }
    records = []
    for path, rows in files.items():
        write_jsonl(path, rows)
        records += [{**r, "file": str(path), "row": k} for k, r in enumerate(rows)]
    return records


def make_spec(root: Path, **read):
    return parse_spec({
        "name": "dupids", "seed": 3,
        "sources": [
            {"name": "a", "paths": ["a/*.jsonl"], "id_field": "id", "priority": 1},
            {"name": "b", "paths": ["b/*.jsonl"], "id_field": "id", "priority": 5},
        ],
        "read": {"partition_rows": 2, **read},
        "stages": {"exact_dedup": {}},
    }, base_dir=root)


def read_dir(folder: Path) -> pd.DataFrame:
    return pd.concat([pq.read_table(f).to_pandas() for f in sorted(folder.rglob("*.parquet"))],
                     ignore_index=True)


def test_later_copies_are_ordered_by_file_then_row():
    keys = pd.DataFrame({
        "id": ["y", "y", "y", "q"], "source": ["b", "a", "a", "a"], "file": [2, 1, 0, 0],
        "row": [0, 1, 4, 0], "pos": [0, 1, 0, 1], "chunk": ["c2", "c1", "c0", "c0"]})
    later = later_copies(keys)
    assert later[["file", "row"]].values.tolist() == [[1, 1], [2, 0]]
    assert later[["first_file", "first_row"]].values.tolist() == [[0, 4], [0, 4]]


def test_every_copy_ends_curated_or_ledgered_once(dask_cluster_client, tmp_path, monkeypatch):
    import curation.duplicate_ids

    monkeypatch.setattr(curation.duplicate_ids, "KEYS_PER_PARTITION", 3)  # a real shuffle
    records = write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    run_pipeline(make_spec(tmp_path / "in"), out, dask_cluster_client)
    curated = read_dir(out / "curated")
    ledger = read_dir(out / "ledger")
    removed = ledger[ledger["action"] == "removed"]
    assert len(curated) + len(removed) == len(records)
    assert curated["id"].is_unique
    assert sorted(curated["id"]) == ["u1", "u2", "u3", "x", "y", "z"]
    # The first copy (file order, then row) is the one kept, whatever its priority.
    kept_text = dict(zip(curated["id"], curated["text"], strict=True))
    assert kept_text["x"] == text(1) and kept_text["y"] == text(3) and kept_text["z"] == text(6)
    dups = removed[removed["reason"] == "duplicate_id"]
    assert (dups["stage"] == "read").all()
    assert sorted(dups["id"]) == ["x", "y", "y", "y", "z"]
    places = sorted((d["file"], d["row"], d["first_file"], d["first_row"])
                    for d in map(json.loads, dups["detail"]))
    a1, a2, b1 = (str(tmp_path / "in" / p) for p in ("a/1.jsonl", "a/2.jsonl", "b/1.jsonl"))
    assert places == sorted([(a1, 2, a1, 0), (a1, 4, a1, 3), (a2, 1, a1, 3),
                             (b1, 1, a1, 3), (b1, 0, a2, 2)])
    assert set(dups.loc[dups["id"] == "z", "source"]) == {"b"}
    read = json.loads((out / "stages" / "00_read" / "_manifest.json").read_text())["totals"]
    assert (read["docs_in"], read["kept"], read["removed"]) == (11, 6, 5)


def test_a_clean_rerun_changes_nothing(dask_cluster_client, tmp_path):
    write_corpus(tmp_path / "in")
    out = tmp_path / "out"
    spec = make_spec(tmp_path / "in")
    run_pipeline(spec, out, dask_cluster_client)
    before = read_dir(out / "curated").sort_values("id").reset_index(drop=True)
    # Cut the run after the decisions were applied but before the read manifest was written.
    (out / "stages" / "00_read" / "_manifest.json").unlink()
    run_pipeline(spec, out, dask_cluster_client)
    after = read_dir(out / "curated").sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert len(read_dir(out / "ledger").query("reason == 'duplicate_id'")) == 5


def test_error_mode_stops_before_any_stage_naming_both_places(tmp_path, capsys):
    write_corpus(tmp_path / "in")
    spec_path = tmp_path / "in" / "spec.yaml"
    spec_path.write_text(json.dumps({
        "name": "dupids", "sources": [
            {"name": "a", "paths": ["a/*.jsonl"], "id_field": "id"},
            {"name": "b", "paths": ["b/*.jsonl"], "id_field": "id"}],
        "read": {"on_duplicate_id": "error"}, "stages": {"exact_dedup": {}}}))
    out = tmp_path / "out"
    assert curate(["run", str(spec_path), "--out", str(out), "--workers", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    a1 = str(tmp_path / "in" / "a" / "1.jsonl")
    assert len(errors) == 1
    assert f"duplicate id 'x': {a1} row 0 and {a1} row 2" in errors[0]
    assert sorted(p.name for p in (out / "stages").iterdir() if p.is_dir()) == ["00_read"]


@pytest.mark.parametrize("bad", ["keep", 3])
def test_on_duplicate_id_is_validated(tmp_path, bad):
    from curation.spec import SpecError

    write_corpus(tmp_path / "in")
    with pytest.raises(SpecError, match="read.on_duplicate_id"):
        make_spec(tmp_path / "in", on_duplicate_id=bad)
