"""Hostile input and bad specs through the whole `curate run` (the readers' own unit tests
are in tests/test_readers.py): every malformed record ends in the ledger, every unreadable
input or invalid spec value is one clear error naming the file or the YAML path, and
nothing is written under OUT before the spec is valid."""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main as curate
from curation.io import zstd_module
from curation.spec import SpecError, load_spec
from tests.conftest import ROOT, write_jsonl

CURATE = str(ROOT / ".venv" / "bin" / "curate")
RECORDS = 5000  # records in each truncated compressed file


def _text(i: int) -> str:
    return f"Record {i} is a plain sentence about rivers, bridges and old stones."


def _good(prefix: str, n: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": _text(i)} for i in range(n)]


def _lines(records: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n"
                    for r in records)


def _write_hostile_corpus(root: Path) -> dict[str, dict[str, str | None]]:
    """One source per kind of damage; returns, per source, id -> expected ledger reason
    (None: curated). Ids of rejected JSONL records are <source>/<file>/<row>."""
    data = root / "data"
    expect: dict[str, dict[str, str | None]] = {}

    # Truncated compressed files: the records before the cut are read, then one
    # `truncated_file` row at the row where the stream broke.
    # Big enough (about 400 KB) for several compressed blocks before the cut.
    blob = gzip.compress(_lines(_good("gz", RECORDS)), mtime=0)
    (data / "gz").mkdir(parents=True)
    (data / "gz" / "cut.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    zst = zstd_module().compress(_lines(_good("zst", RECORDS)))
    (data / "zst").mkdir(parents=True)
    (data / "zst" / "cut.jsonl.zst").write_bytes(zst[: len(zst) // 2])
    expect["gz"] = {}  # filled from the run: a prefix of the records, then the cut row
    expect["zst"] = {}

    bad = _lines(_good("u", 3))
    bad += b'{"id": "u-bad", "text": "caf\xe9 latin-1 byte"}\n'
    bad += b'{"id": "u-surrogate", "text": "lone \\ud800 escape"}\n'
    bad += b'{"id": "n-raw", "text": "raw \x00 nul"}\n'
    bad += b'{"id": "n-escaped", "text": "escaped \\u0000 nul"}\n'
    bad += b"[" * 100_000 + b"\n"
    bad += b'{"id": "deep", "text": "ok", "meta": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001 + b"\n"
    bad += b"\n   \n"  # blank lines are not records
    bad += _lines(_good("v", 2))
    (data / "mixed").mkdir(parents=True)
    (data / "mixed" / "bad.jsonl").write_bytes(bad)
    (data / "mixed" / "empty.jsonl").write_bytes(b"")
    (data / "mixed" / "empty2.jsonl.gz").write_bytes(b"")
    (data / "mixed" / "empty3.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    row_id = "mixed/bad.jsonl/{}".format
    expect["mixed"] = {
        "u0": None, "u1": None, "u2": None, row_id(3): "invalid_utf8",
        row_id(4): "invalid_utf8", row_id(5): "nul_byte", row_id(6): "nul_byte",
        row_id(7): "bad_json", row_id(8): "bad_json", "v0": None, "v1": None,
    }

    (data / "pq").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["p0", "p1", "p2"], "text": [1, 2, 3]}),
                   data / "pq" / "int_text.parquet")
    pq.write_table(pa.table({"id": [0.5, 1.5], "text": [_text(0), _text(1)]}),
                   data / "pq" / "float_id.parquet")
    pq.write_table(pa.table({"id": ["ok0", "ok1"], "text": [_text(0), _text(1)]}),
                   data / "pq" / "ok.parquet")
    expect["pq"] = {
        "pq/int_text.parquet/0": "text_not_string", "pq/int_text.parquet/1": "text_not_string",
        "pq/int_text.parquet/2": "text_not_string", "pq/float_id.parquet/0": "bad_id",
        "pq/float_id.parquet/1": "bad_id", "ok0": None, "ok1": None,
    }
    return expect


def _spec(sources: list[dict], **extra) -> dict:
    return {"name": "hostile", "seed": 1, "sources": sources,
            "read": {"partition_rows": 50}, "stages": {"normalize": {}}, **extra}


HOSTILE_SOURCES = [
    {"name": "gz", "paths": ["data/gz/*.jsonl.gz"], "id_field": "id"},
    {"name": "zst", "paths": ["data/zst/*.jsonl.zst"], "id_field": "id"},
    {"name": "mixed", "paths": ["data/mixed/*"], "id_field": "id"},
    {"name": "pq", "paths": ["data/pq/*.parquet"], "format": "parquet", "id_field": "id"},
]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    expect = _write_hostile_corpus(root)
    (root / "spec.yaml").write_text(json.dumps(_spec(HOSTILE_SOURCES)))
    done = subprocess.run([CURATE, "run", "spec.yaml", "--out", "out", "--workers", "1"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    kept = pd.read_parquet(root / "out" / "curated")
    ledger = pd.read_parquet(root / "out" / "ledger")
    return expect, kept, ledger[ledger["action"] == "removed"]


def _outcomes(kept: pd.DataFrame, removed: pd.DataFrame, source: str) -> dict:
    got = {i: None for i in kept.loc[kept["source"] == source, "id"]}
    rows = removed[removed["source"] == source]
    assert not rows["id"].duplicated().any()
    assert set(got).isdisjoint(rows["id"])
    got.update(zip(rows["id"], rows["reason"], strict=True))
    return got


@pytest.mark.parametrize("source", ["mixed", "pq"])
def test_every_malformed_record_is_a_ledger_row_and_every_good_one_is_curated(hostile_run,
                                                                             source):
    expect, kept, removed = hostile_run
    assert _outcomes(kept, removed, source) == expect[source]


def test_ledger_rows_of_the_read_stage_name_file_and_line(hostile_run):
    _, _, removed = hostile_run
    row = removed[removed["id"] == "mixed/bad.jsonl/5"].iloc[0]
    assert row["stage"] == "read" and row["reason"] == "nul_byte"
    detail = json.loads(row["detail"])
    assert detail["file"].endswith("bad.jsonl") and detail["line"] == 6


@pytest.mark.parametrize("source", ["gz", "zst"])
def test_a_truncated_compressed_file_keeps_what_came_before_the_cut(hostile_run, source):
    _, kept, removed = hostile_run
    got = _outcomes(kept, removed, source)
    read_ids = sorted((i for i, why in got.items() if why is None),
                      key=lambda i: int(i.removeprefix(source)))
    assert 0 < len(read_ids) < RECORDS
    assert read_ids == [f"{source}{i}" for i in range(len(read_ids))]  # a clean prefix
    cut = {i: why for i, why in got.items() if why is not None}
    assert cut == {f"{source}/cut.jsonl.{source}/{len(read_ids)}": "truncated_file"}
    detail = json.loads(removed.loc[removed["id"].isin(cut), "detail"].iloc[0])
    assert detail["line"] == len(read_ids) + 1


def _run_in_process(root: Path, spec: dict, capsys) -> tuple[int, str]:
    (root / "spec.yaml").write_text(json.dumps(spec))
    code = curate(["run", str(root / "spec.yaml"), "--out", str(root / "out"),
                   "--workers", "1"])
    return code, capsys.readouterr().err


def test_a_glob_that_matches_nothing_stops_before_anything_is_written(tmp_path, capsys):
    write_jsonl(tmp_path / "data" / "a.jsonl", _good("a", 2))
    spec = _spec([{"name": "a", "paths": ["data/a.jsonl", "data/typo/*.jsonl"]}])
    code, err = _run_in_process(tmp_path, spec, capsys)
    assert code == 2
    assert "sources[0].paths: input pattern 'data/typo/*.jsonl' matches no file" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pattern", ["data/sub", "data/*"])
def test_a_directory_where_a_file_is_expected_names_it(tmp_path, capsys, pattern):
    write_jsonl(tmp_path / "data" / "a.jsonl", _good("a", 2))
    (tmp_path / "data" / "sub").mkdir()
    code, err = _run_in_process(tmp_path, _spec([{"name": "a", "paths": [pattern]}]), capsys)
    assert code == 2
    assert f"{tmp_path / 'data' / 'sub'}: is a directory, expected a file" in err
    assert not (tmp_path / "out").exists()


def test_an_unreadable_parquet_file_is_one_clear_error_naming_it(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"text": [_text(0)]}), tmp_path / "data" / "a.parquet")
    broken = tmp_path / "data" / "b.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file at all")
    (tmp_path / "spec.yaml").write_text(json.dumps(
        _spec([{"name": "p", "paths": ["data/*.parquet"], "format": "parquet"}])))
    done = subprocess.run([CURATE, "run", "spec.yaml", "--out", "out", "--workers", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"curate run: error: {broken}: not a readable Parquet file")
    assert not (tmp_path / "out" / "curated").exists()


def test_an_unreadable_input_file_is_reported_once(tmp_path):
    (tmp_path / "data").mkdir()
    broken = tmp_path / "data" / "b.parquet"
    broken.write_bytes(b"PAR1 this is not a parquet file at all")
    (tmp_path / "spec.yaml").write_text(json.dumps(
        _spec([{"name": "p", "paths": ["data/*.parquet"], "format": "parquet"}])))
    done = subprocess.run([CURATE, "run", "spec.yaml", "--out", "out", "--workers", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count(str(broken)) == 1, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_100_mb_line_is_one_ledger_row_in_bounded_memory(tmp_path):
    """Peak RSS of the run's biggest process with a 100 MB line vs without it."""
    def peak_rss_mb(name: str, lines: bytes, big_line_mb: int = 0) -> tuple[float, Path]:
        root = tmp_path / name
        (root / "data").mkdir(parents=True)
        with open(root / "data" / "a.jsonl", "wb") as f:
            f.write(lines)
            if big_line_mb:
                f.write(b'{"id": "huge", "text": "')
                block = b"abcdefghij" * (1 << 16)
                for _ in range(big_line_mb * (1 << 20) // len(block)):
                    f.write(block)
                f.write(b'"}\n')
            f.write(lines.replace(b'"id": "', b'"id": "after-'))  # ids stay unique
        spec = _spec([{"name": "a", "paths": ["data/a.jsonl"], "id_field": "id"}])
        spec["read"]["max_record_bytes"] = 1 << 20
        (root / "spec.yaml").write_text(json.dumps(spec))
        # ru_maxrss of RUSAGE_CHILDREN: the largest of the wrapper's reaped descendants
        # (the curate driver and its LocalCluster worker), in KiB on Linux.
        probe = ("import resource, subprocess, sys; "
                 "rc = subprocess.run(sys.argv[1:]).returncode; "
                 "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        done = subprocess.run(
            [sys.executable, "-c", probe, CURATE, "run", "spec.yaml", "--out", "out",
             "--workers", "1"], cwd=root, capture_output=True, text=True, timeout=600)
        rc, kib = done.stdout.split()[-2:]
        assert rc == "0", done.stderr[-3000:]
        return int(kib) / 1024, root / "out"

    small = _lines(_good("s", 20))
    base_mb, _ = peak_rss_mb("base", small)
    huge_mb, out = peak_rss_mb("huge", small.replace(b'"s', b'"t'), big_line_mb=100)
    removed = pd.read_parquet(out / "ledger")
    row = removed[removed["reason"] == "record_too_large"]
    assert list(row["id"]) == ["a/a.jsonl/20"]
    assert json.loads(row["detail"].iloc[0])["bytes"] > 100 * 2**20
    assert len(pd.read_parquet(out / "curated")) == 40
    print(f"peak RSS without the line {base_mb:.0f} MB, with it {huge_mb:.0f} MB")
    assert huge_mb - base_mb < 40, (base_mb, huge_mb)


# --- bad specs: every invalid value answered with its YAML path and what is allowed ------


def _full_spec() -> dict:
    """A valid spec that switches every stage and the tokenizer on."""
    return {
        "name": "full", "seed": 3,
        "sources": [
            {"name": "a", "paths": ["data/a.jsonl"], "id_field": "id", "weight": 1.0},
            {"name": "b", "paths": ["data/b.jsonl"], "weight": 2.0},
        ],
        "read": {"partition_rows": 10},
        "stages": {
            "normalize": {}, "language": {"min_score": 0.5},
            "heuristics": {"gopher_quality": {}, "gopher_repetition": {}, "c4": {}},
            "quality": {"positive": ["a"], "negative": ["b"], "threshold": 0.5},
            "exact_dedup": {}, "fuzzy_dedup": {},
            "decontaminate": {"tasks": [{"name": "qa", "paths": ["tasks/qa.jsonl"],
                                         "fields": ["q"]}]},
        },
        "tokenizer": {"train": {"vocab_size": 1000}},
    }


DELETE = object()

# (where to change the spec, the new value, expected YAML path, expected phrase)
BAD_SPECS = [
    ("name", DELETE, "name", "Field required"),
    ("seed", "abc", "seed", "valid integer"),
    ("colour", "red", "colour", "unknown key (allowed: name, read, seed, sources, stages, "
     "tokenizer)"),
    ("sources", [], "sources", "at least 1 item"),
    ("sources", {"name": "a"}, "sources", "valid list"),
    ("sources[0].name", "../up", "sources[0].name", "must be letters, digits, '_', '.', '-'"),
    ("sources[1].name", "a", "sources[1].name", "duplicate source name 'a'"),
    ("sources[0].paths", [], "sources[0].paths", "at least 1 item"),
    ("sources[0].paths", ["data/none*.jsonl"], "sources[0].paths",
     "input pattern 'data/none*.jsonl' matches no file"),
    ("sources[0].format", "csv", "sources[0].format", "'jsonl' or 'parquet'"),
    ("sources[0].id_field", 5, "sources[0].id_field", "valid string"),
    ("sources[0].languages", "en", "sources[0].languages", "valid list"),
    ("sources[0].priority", "high", "sources[0].priority", "valid integer"),
    ("sources[1].weight", -1, "sources[1].weight", "greater than 0"),
    ("sources[1].weight", DELETE, "sources[1]", "no `weight` or `epochs`"),
    ("sources[0].epochs", 2.0, "sources[0]", "give `weight` or `epochs`, not both"),
    ("sources[0].colour", 1, "sources[0].colour", "unknown key (allowed: epochs, format, "
     "id_field, languages, name, paths, priority, text_field, weight)"),
    ("read.partition_rows", 0, "read.partition_rows", "greater than 0"),
    ("read.max_record_bytes", "big", "read.max_record_bytes", "valid integer"),
    ("read.chunk", 1, "read.chunk",
     "unknown key (allowed: max_record_bytes, on_duplicate_id, partition_rows)"),
    ("stages.dedup", {}, "stages.dedup", "unknown key (allowed: decontaminate, exact_dedup, "
     "fuzzy_dedup, heuristics, language, normalize, quality, select)"),
    ("stages.normalize.nfc", "maybe", "stages.normalize.nfc", "valid boolean"),
    ("stages.normalize.ascii", True, "stages.normalize.ascii",
     "unknown key (allowed: exempt, fix_unicode, nfc, only, whitespace)"),
    ("stages.language.min_score", 1.5, "stages.language.min_score",
     "less than or equal to 1"),
    ("stages.language.max_chars", 0, "stages.language.max_chars", "greater than or equal to 1"),
    ("stages.heuristics.gopher_quality.min_words", -1,
     "stages.heuristics.gopher_quality.min_words", "greater than or equal to 0"),
    ("stages.heuristics.gopher_quality.stop_words", [],
     "stages.heuristics.gopher_quality.stop_words", "at least 1 item"),
    ("stages.heuristics.gopher_repetition.max_dup_line_fraction", 2,
     "stages.heuristics.gopher_repetition.max_dup_line_fraction", "less than or equal to 1"),
    ("stages.heuristics.c4.min_line_words", 0, "stages.heuristics.c4.min_line_words",
     "greater than or equal to 1"),
    ("stages.heuristics.gopher", {}, "stages.heuristics.gopher",
     "unknown key (allowed: c4, exempt, gopher_quality, gopher_repetition, only)"),
    ("stages.quality.positive", [], "stages.quality.positive", "at least 1 item"),
    ("stages.quality.negative[0]", "nope", "stages.quality.negative[0]",
     "no source named 'nope' (sources: a, b)"),
    ("stages.quality.holdout", 1.0, "stages.quality.holdout", "less than 1"),
    ("stages.quality.threshold", 2, "stages.quality.threshold", "less than or equal to 1"),
    ("stages.exact_dedup.ignore_case_and_space", "x",
     "stages.exact_dedup.ignore_case_and_space", "valid boolean"),
    ("stages.fuzzy_dedup.shingle", "byte", "stages.fuzzy_dedup.shingle", "'word' or 'char'"),
    ("stages.fuzzy_dedup.threshold", 1.0, "stages.fuzzy_dedup.threshold", "less than 1"),
    ("stages.fuzzy_dedup.num_perm", 5000, "stages.fuzzy_dedup.num_perm",
     "less than or equal to 1024"),
    ("stages.decontaminate.ngram", 1, "stages.decontaminate.ngram",
     "greater than or equal to 2"),
    ("stages.decontaminate.min_task_words", 20, "stages.decontaminate",
     "min_task_words (20) > ngram (13)"),
    ("stages.decontaminate.tasks", [], "stages.decontaminate.tasks", "at least 1 item"),
    ("stages.decontaminate.tasks[0].fields", [], "stages.decontaminate.tasks[0].fields",
     "at least 1 item"),
    ("stages.decontaminate.tasks[0].split", "test", "stages.decontaminate.tasks[0].split",
     "unknown key (allowed: columns, few_shot, fewshot_paths, fields, kind, name, paths)"),
    ("tokenizer.train", DELETE, "tokenizer", "give exactly one of `train` or `path`"),
    ("tokenizer.train.vocab_size", 100, "tokenizer.train.vocab_size", "greater than 256"),
    ("tokenizer.shard_tokens", 2**31, "tokenizer.shard_tokens", "less than 2147483648"),
    ("tokenizer.vocab", 5, "tokenizer.vocab", "unknown key (allowed: batch_docs, eod_token, "
     "path, shard_tokens, train)"),
]


def _set(spec: dict, where: str, value) -> dict:
    spec = copy.deepcopy(spec)
    keys = [int(k) if k.isdigit() else k
            for k in where.replace("[", ".").replace("]", "").split(".")]
    node = spec
    for key in keys[:-1]:
        node = node[key]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return spec


def _spec_dir(root: Path) -> Path:
    write_jsonl(root / "data" / "a.jsonl", _good("a", 2))
    write_jsonl(root / "data" / "b.jsonl", _good("b", 2))
    write_jsonl(root / "tasks" / "qa.jsonl", [{"q": _text(0)}])
    return root


def test_the_full_spec_of_the_bad_spec_table_is_valid(tmp_path):
    (_spec_dir(tmp_path) / "spec.yaml").write_text(json.dumps(_full_spec()))
    load_spec(tmp_path / "spec.yaml")


@pytest.mark.parametrize(("where", "value", "path", "phrase"), BAD_SPECS,
                         ids=[f"{w}={v!r}"[:60] for w, v, _, _ in BAD_SPECS])
def test_a_bad_spec_value_names_its_yaml_path_and_nothing_is_written(tmp_path, capsys, where,
                                                                     value, path, phrase):
    spec = _set(_full_spec(), where, value)
    (_spec_dir(tmp_path) / "spec.yaml").write_text(json.dumps(spec))
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "spec.yaml")
    assert f"{path}: " in str(err.value) and phrase in str(err.value), str(err.value)
    problem = next(p for p in err.value.problems if p.startswith(f"{path}: "))
    assert phrase in problem
    before = sorted(os.listdir(tmp_path))
    code = curate(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert phrase in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before


def test_every_problem_of_a_spec_is_listed_at_once(tmp_path):
    spec = _set(_set(_set(_full_spec(), "seed", "x"), "read.partition_rows", -5),
                "stages.fuzzy_dedup.shingle", "byte")
    (_spec_dir(tmp_path) / "spec.yaml").write_text(json.dumps(spec))
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "spec.yaml")
    paths = sorted(p.split(":")[0] for p in err.value.problems)
    assert paths == ["read.partition_rows", "seed", "stages.fuzzy_dedup.shingle"]


def test_yaml_syntax_errors_name_the_line(tmp_path, capsys):
    _spec_dir(tmp_path)
    (tmp_path / "spec.yaml").write_text("name: x\nsources:\n  - {name: a, paths: [data/a.jsonl\n")
    code = curate(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "not valid YAML" in err and "line 4" in err
    assert not (tmp_path / "out").exists()


def test_a_task_path_that_matches_nothing_stops_before_anything_is_written(tmp_path, capsys):
    spec = _set(_full_spec(), "stages.decontaminate.tasks[0].paths", ["tasks/typo.jsonl"])
    for stage in ("quality", "fuzzy_dedup", "language", "heuristics"):
        del spec["stages"][stage]
    del spec["tokenizer"]
    (_spec_dir(tmp_path) / "spec.yaml").write_text(json.dumps(spec))
    code = curate(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out"),
                   "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "stages.decontaminate.tasks[0].paths" in err and "tasks/typo.jsonl" in err
    assert not (tmp_path / "out").exists()
