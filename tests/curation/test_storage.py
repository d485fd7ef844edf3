"""OUT paths: local folders stay pathlib, URLs go through fsspec with whole-file writes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from curation.atomic import atomic_write_parquet, write_json_atomic
from curation.storage import is_remote, joined, out_path, read_parquet_table, remove_tree


def test_local_paths_and_file_urls_are_pathlib():
    assert type(out_path("/tmp/x")) is type(Path("/tmp/x"))
    assert out_path("file:///tmp/x") == Path("/tmp/x")
    assert not is_remote("file:///tmp/x") and is_remote("s3://bucket/run")


def test_a_manifest_relative_path_folds_its_dots_on_a_url():
    assert str(joined("s3://b/run/tokens/web", "../../tokenizer.json")) == \
        "s3://b/run/tokenizer.json"


def test_writes_reads_and_removal_through_fsspec():
    root = out_path("memory://storage-test/run")
    write_json_atomic(root / "stages" / "_manifest.json", {"key": "k"})
    frame = pd.DataFrame({"id": ["a", "b"], "n": [1, 2]})
    atomic_write_parquet(frame, root / "data" / "part-00000.parquet")
    assert (root / "stages" / "_manifest.json").read_text() == '{\n  "key": "k"\n}\n'
    assert read_parquet_table(root / "data").to_pandas().equals(frame)
    assert not [p for p in root.fs.find(root.path) if p.endswith(".tmp")]
    remove_tree(root / "data")
    assert not (root / "data").exists() and (root / "stages" / "_manifest.json").exists()
