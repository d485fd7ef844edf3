"""Readers: every malformed input becomes a ledger row (or one clear error), in bounded memory."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io import InputError, expand_paths, read_documents, zstd_module

GOOD = [{"id": f"g{i}", "text": f"document number {i}", "n": i} for i in range(50)]


def _read(path, fmt="jsonl", **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    options = {"source": "src", "file_key": "f", "fmt": fmt, "text_field": "text",
               "id_field": None, "chunk_rows": 1000, **kwargs}
    chunks = list(read_documents(str(path), **options))
    if not chunks:
        return pd.DataFrame(columns=["id"]), pd.DataFrame(columns=["id"])
    return (pd.concat([c[0] for c in chunks], ignore_index=True),
            pd.concat([c[1] for c in chunks], ignore_index=True))


def _jsonl_bytes(records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _details(ledger: pd.DataFrame) -> list[dict]:
    return [json.loads(d) for d in ledger["detail"]]


def test_good_jsonl_ids_meta_and_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one", "b": [1, 2], "a": "x"}\n\n  \n{"text": "two"}\n'
                     b'{"text": "three", "z": null}')  # no final newline
    docs, ledger = _read(path)
    assert list(docs["id"]) == ["src/f/0", "src/f/1", "src/f/2"]
    assert list(docs["text"]) == ["one", "two", "three"]
    assert list(docs["meta"]) == ['{"a": "x", "b": [1, 2]}', "{}", '{"z": null}']
    assert (docs["source"] == "src").all() and ledger.empty


def test_id_field_is_used_and_left_out_of_meta(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl_bytes([{"doc": 7, "text": "x", "k": 1}, {"doc": "b", "text": "y"},
                                   {"text": "no id"}, {"doc": [1], "text": "list id"}]))
    docs, ledger = _read(path, id_field="doc")
    assert list(docs["id"]) == ["7", "b"] and list(docs["meta"]) == ['{"k": 1}', "{}"]
    assert list(ledger["reason"]) == ["missing_id", "bad_id"]
    assert list(ledger["id"]) == ["src/f/2", "src/f/3"]  # the default scheme: no usable id


def test_every_malformed_record_is_a_ledger_row(tmp_path):
    lines = [
        b'{"text": "good first"}',
        b'{"text": broken',                 # bad_json
        b'["a", "list"]',                   # not_an_object
        b'{"body": "no text field"}',       # missing_text
        b'{"text": null}',                  # missing_text
        b'{"text": 42}',                    # text_not_string
        b'{"text": "caf\xe9 latin-1"}',     # invalid_utf8
        b'{"text": "nul \x00 byte"}',       # nul_byte (raw)
        b'{"text": "nul \\u0000 escaped"}',  # nul_byte (escaped)
        b'{"text": "lone \\ud800 half"}',    # invalid_utf8 (cannot be UTF-8)
        b'{"text": ""}',                    # empty_text
        b"[" * 100_000,                     # bad_json, not a RecursionError crash
        b'{"text": "' + b"x" * 300_000 + b'"}',  # record_too_large
        b"",                                # blank: skipped, not a record
        b'{"text": "good last \\ud83d\\ude00"}',  # a valid surrogate pair
    ]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, ledger = _read(path, max_record_bytes=200_000)
    assert list(docs["text"]) == ["good first", "good last \U0001f600"]
    assert list(docs["id"]) == ["src/f/0", "src/f/13"]
    assert list(ledger["reason"]) == [
        "bad_json", "not_an_object", "missing_text", "missing_text", "text_not_string",
        "invalid_utf8", "nul_byte", "nul_byte", "invalid_utf8", "empty_text", "bad_json",
        "record_too_large",
    ]
    assert list(ledger["id"]) == [f"src/f/{i}" for i in range(1, 13)]
    assert [d["line"] for d in _details(ledger)] == list(range(2, 14))
    assert all(d["file"] == str(path) for d in _details(ledger))
    assert set(ledger["stage"]) == {"read"} and set(ledger["action"]) == {"removed"}
    assert _details(ledger)[-1]["bytes"] == 300_012


def test_ids_are_stable_across_reads_and_chunking(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl_bytes(GOOD[:5]) + b"{oops\n" + _jsonl_bytes(GOOD[5:]))
    whole, ledger = _read(path)
    chunks = list(read_documents(str(path), source="src", file_key="f", fmt="jsonl",
                                 text_field="text", id_field=None, chunk_rows=7))
    assert len(chunks) == 8 and all(len(d) <= 7 for d, _ in chunks)
    assert list(pd.concat([d for d, _ in chunks])["id"]) == list(whole["id"])
    assert whole["id"].iloc[5] == "src/f/6" and list(ledger["id"]) == ["src/f/5"]


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_file_keeps_records_before_the_cut(tmp_path, suffix):
    # ~2.4 MB: many zstd blocks, so the blocks before the cut are whole and readable.
    records = [{"text": f"document number {i} " * 5} for i in range(20_000)]
    data = _jsonl_bytes(records)
    packed = gzip.compress(data) if suffix == ".gz" else zstd_module().compress(data)
    whole = tmp_path / f"whole.jsonl{suffix}"
    whole.write_bytes(packed)
    docs, ledger = _read(whole)
    assert len(docs) == 20_000 and ledger.empty

    cut = tmp_path / f"cut.jsonl{suffix}"
    cut.write_bytes(packed[: len(packed) * 2 // 3])
    docs, ledger = _read(cut)
    assert 10_000 < len(docs) < 20_000
    assert list(docs["text"]) == [r["text"] for r in records[: len(docs)]]
    assert list(ledger["reason"]) == ["truncated_file"]
    detail = _details(ledger)[0]
    assert detail["file"] == str(cut) and detail["line"] == len(docs) + 1
    assert ledger["id"].iloc[0] == f"src/f/{len(docs)}"


def test_corrupt_gzip_is_one_ledger_row(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"this is not gzip at all")
    docs, ledger = _read(path)
    assert docs.empty and list(ledger["reason"]) == ["corrupt_file"]


def test_empty_files_yield_nothing(tmp_path):
    for name in ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst", "e.parquet"]:
        (tmp_path / name).write_bytes(b"")
        fmt = "parquet" if name.endswith("parquet") else "jsonl"
        assert list(read_documents(str(tmp_path / name), source="s", file_key="e", fmt=fmt,
                                   text_field="text", id_field=None, chunk_rows=10)) == []


def test_expand_paths_globs_sorts_and_dedups(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "sub/c.jsonl", "x.txt"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("{}\n")
    found = expand_paths(["*.jsonl", "a.jsonl", "**/c.jsonl"], tmp_path)
    assert found == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"),
                     str(tmp_path / "sub" / "c.jsonl")]


def test_glob_matching_nothing_names_the_pattern(tmp_path):
    with pytest.raises(InputError, match=r"'missing/\*\.jsonl' matches no file"):
        expand_paths(["missing/*.jsonl"], tmp_path)
    with pytest.raises(InputError, match="nope.jsonl"):
        expand_paths(["nope.jsonl"], tmp_path)


def test_directory_where_a_file_is_expected(tmp_path):
    (tmp_path / "data.jsonl").mkdir()
    with pytest.raises(InputError, match=r"data\.jsonl: is a directory"):
        expand_paths(["data.jsonl"], tmp_path)
    with pytest.raises(InputError, match=r"data\.jsonl: is a directory"):
        expand_paths(["*.jsonl"], tmp_path)
    with pytest.raises(InputError, match=r"data\.jsonl: is a directory"):
        list(read_documents(str(tmp_path / "data.jsonl"), source="s", file_key="d",
                            fmt="jsonl", text_field="text", id_field=None, chunk_rows=10))


def test_fsspec_memory_urls():
    fs = fsspec.filesystem("memory")
    fs.pipe("/readers-test/a.jsonl.gz", gzip.compress(_jsonl_bytes(GOOD[:3])))
    fs.pipe("/readers-test/b.jsonl", _jsonl_bytes(GOOD[3:5]) + b"not json\n")
    try:
        paths = expand_paths(["memory://readers-test/*.jsonl*"], Path("/unused"))
        assert paths == ["memory:///readers-test/a.jsonl.gz", "memory:///readers-test/b.jsonl"]
        docs, ledger = _read(paths[0], id_field="id")
        assert list(docs["id"]) == ["g0", "g1", "g2"]
        docs, ledger = _read(paths[1])
        assert len(docs) == 2 and list(ledger["reason"]) == ["bad_json"]
        with pytest.raises(InputError, match="memory://readers-test/none"):
            expand_paths(["memory://readers-test/none*"], Path("/unused"))
    finally:
        fs.rm("/readers-test", recursive=True)


def test_parquet_good_file_streams_in_batches(tmp_path):
    path = tmp_path / "a.parquet"
    table = pa.table({"id": [f"p{i}" for i in range(25)], "text": [f"t{i}" for i in range(25)],
                      "score": [i / 2 for i in range(25)]})
    pq.write_table(table, path, row_group_size=10)
    chunks = list(read_documents(str(path), source="src", file_key="f", fmt="parquet",
                                 text_field="text", id_field="id", chunk_rows=10))
    assert [len(d) for d, _ in chunks] == [10, 10, 5]
    docs = pd.concat([d for d, _ in chunks])
    assert list(docs["id"]) == [f"p{i}" for i in range(25)]
    assert docs["meta"].iloc[3] == '{"score": 1.5}'


def test_parquet_bad_rows(tmp_path):
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["ok", None, "", "a\x00b", "fine"]}), path)
    docs, ledger = _read(path, fmt="parquet")
    assert list(docs["id"]) == ["src/f/0", "src/f/4"]
    assert list(ledger["reason"]) == ["missing_text", "empty_text", "nul_byte"]
    assert [d["row"] for d in _details(ledger)] == [1, 2, 3]


def test_parquet_text_column_of_the_wrong_type_rejects_each_row(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3], "other": ["a", "b", "c"]}), path)
    docs, ledger = _read(path, fmt="parquet")
    assert docs.empty and list(ledger["reason"]) == ["text_not_string"] * 3
    assert _details(ledger)[0] == {"field": "text", "file": str(path), "row": 0, "type": "int64"}
    docs, ledger = _read(path, fmt="parquet", text_field="body")
    assert list(ledger["reason"]) == ["missing_text"] * 3


def test_parquet_invalid_utf8_row(tmp_path):
    raw = [b"good", b"bad \xff bytes"]
    offsets = pa.array([0, 4, 4 + len(raw[1])], type=pa.int32())
    text = pa.Array.from_buffers(pa.string(), 2, [None, offsets.buffers()[1],
                                                   pa.py_buffer(b"".join(raw))])
    path = tmp_path / "u.parquet"
    pq.write_table(pa.table({"text": text}), path)
    docs, ledger = _read(path, fmt="parquet")
    assert list(docs["text"]) == ["good"] and list(ledger["reason"]) == ["invalid_utf8"]


def test_not_a_parquet_file_is_one_clear_error(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(InputError, match=r"fake\.parquet: not a readable Parquet file"):
        _read(path, fmt="parquet")


@pytest.mark.slow
def test_memory_stays_bounded_on_a_100mb_line(tmp_path):
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as f:
        f.write(b'{"text": "before"}\n{"text": "')
        for _ in range(100):
            f.write(b"y" * (1 << 20))
        f.write(b'"}\n{"text": "after"}\n')
    script = textwrap.dedent(f"""
        import json, resource
        from curation.io import read_documents
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        texts, reasons = [], []
        for docs, ledger in read_documents({str(path)!r}, source="s", file_key="h",
                fmt="jsonl", text_field="text", id_field=None, chunk_rows=100,
                max_record_bytes=1 << 20):
            texts += list(docs["text"]); reasons += list(ledger["reason"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"growth_kb": peak - start, "texts": texts, "reasons": reasons}}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    report = json.loads(result.stdout)
    assert report["texts"] == ["before", "after"]
    assert report["reasons"] == ["record_too_large"]
    assert report["growth_kb"] < 50 * 1024, f"peak RSS grew by {report['growth_kb']} KB"
