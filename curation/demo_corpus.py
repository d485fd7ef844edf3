"""`curate demo-corpus DIR`: a few-MB, three-source corpus with planted problems, offline.

Sources (layout under DIR, read by corpus_specs/demo.yaml):
  pydocs/part-*.jsonl.zst      Python's pydoc topics, one per record {"id", "text", "title"}
  docstrings/part-*.jsonl.gz   stdlib docstrings grouped into documents {"text", "module"}
  web/part-*.parquet           a synthetic crawl {"id", "url", "text"}: prose plus spam,
                               boilerplate, mojibake, copies, other languages, task text,
                               and generated filler only the quality classifier catches
  tasks/demo_qa.jsonl          the demo test set {"question", "context", "answer"}
  demo_corpus.json             the summary: files, counts and every planted case

The build is deterministic: sorted inputs, one seeded RNG, gzip without a timestamp, a
fixed zstd level and Parquet without pandas metadata, so the same Python and library
versions give byte-identical files.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from curation.demo.python_text import (
    PYDOC_TOPICS,
    demo_qa_tasks,
    docstring_records,
    prose_sentence_pool,
    pydoc_topic_records,
)
from curation.demo.web import build_web_pages

DEMO_SEED = 1234
QA_TASKS = 40
ZSTD_LEVEL = 10
GZIP_LEVEL = 9
FILES_PER_SOURCE = {"pydocs": 2, "docstrings": 3, "web": 3}
SUFFIX = {"pydocs": ".jsonl.zst", "docstrings": ".jsonl.gz", "web": ".parquet"}

# Malformed lines planted for the read stage: (source, file index, after this many
# records of that file, kind, the raw line).
MALFORMED_LINES = (
    ("pydocs", 0, 1, "bad_json", '{"id": "pydoc-broken", "text": "an unterminated str'),
    ("pydocs", 1, 2, "non_string_text", '{"id": "pydoc-number", "text": 42, "title": "x"}'),
    ("docstrings", 0, 3, "missing_text", '{"module": "no_text_here"}'),
    ("docstrings", 2, 1, "non_object", '["a", "JSON", "array", "is", "not", "a", "record"]'),
)


def _scaled(records: list[dict], scale: float) -> list[dict]:
    """`scale` of the records, evenly spread over the (sorted) list, at least one."""
    count = min(len(records), max(1, round(len(records) * scale)))
    return [records[i * len(records) // count] for i in range(count)]


def _chunks(records: list, parts: int) -> list[list]:
    bounds = [round(i * len(records) / parts) for i in range(parts + 1)]
    return [records[bounds[i] : bounds[i + 1]] for i in range(parts)]


def _jsonl_files(source: str, records: list[dict]) -> tuple[dict[str, bytes], list[dict], list]:
    """File contents of a JSONL source, each record's location, and the malformed lines."""
    files, originals, malformed = {}, [], []
    for file_index, chunk in enumerate(_chunks(records, FILES_PER_SOURCE[source])):
        name = f"{source}/part-{file_index:05d}{SUFFIX[source]}"
        planted = {m[2]: m for m in MALFORMED_LINES if m[:2] == (source, file_index)}
        lines: list[str] = []
        for position, record in enumerate(chunk + [None]):
            if position in planted:
                lines.append(planted[position][4])
                malformed.append(
                    {
                        "source": source,
                        "file": name,
                        "line": len(lines),
                        "kind": planted[position][3],
                    }
                )
            if record is not None:
                lines.append(json.dumps(record, ensure_ascii=False))
                ref = {"source": source, "file": name, "line": len(lines)}
                if "id" in record:
                    ref["id"] = record["id"]
                originals.append({"text": record["text"], "ref": ref})
        files[name] = ("\n".join(lines) + "\n").encode("utf-8")
    return files, originals, malformed


def _compress(name: str, data: bytes) -> bytes:
    if name.endswith(".zst"):
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if name.endswith(".gz"):
        return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
    return data


def _parquet_bytes(records: list[dict]) -> bytes:
    table = pa.table({column: [r[column] for r in records] for column in ("id", "url", "text")})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", compression_level=ZSTD_LEVEL)
    return sink.getvalue().to_pybytes()


def build_demo_corpus(out_dir: Path, scale: float = 1.0) -> dict:
    """Write the demo corpus under `out_dir` and return (and save) its summary.

    `scale` multiplies the document counts of every source (the demo test set keeps its
    size); at 1.0 the corpus has about 2,300 documents, 3.2 MB of text (0.7 MB on disk).
    pydocs and docstrings hold all the stdlib has at 1.0; larger scales grow the web source.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    out_dir = Path(out_dir)
    pydocs = _scaled(pydoc_topic_records(), scale)
    all_docstrings = docstring_records()
    docstrings = _scaled(all_docstrings, scale)

    files: dict[str, bytes] = {}
    originals: list[dict] = []
    malformed: list[dict] = []
    for source, records in (("pydocs", pydocs), ("docstrings", docstrings)):
        source_files, source_originals, source_malformed = _jsonl_files(source, records)
        files.update({name: _compress(name, data) for name, data in source_files.items()})
        originals += source_originals
        malformed += source_malformed

    pool = prose_sentence_pool(
        [r["text"] for r in pydoc_topic_records()] + [r["text"] for r in all_docstrings]
    )
    tasks = demo_qa_tasks(QA_TASKS, DEMO_SEED)
    web_records, plan = build_web_pages(originals, pool, tasks, scale, DEMO_SEED)
    for file_index, chunk in enumerate(_chunks(web_records, FILES_PER_SOURCE["web"])):
        files[f"web/part-{file_index:05d}.parquet"] = _parquet_bytes(chunk)
    task_lines = "".join(json.dumps(task, ensure_ascii=False) + "\n" for task in tasks)
    files["tasks/demo_qa.jsonl"] = task_lines.encode("utf-8")

    for name, data in sorted(files.items()):
        _write_if_changed(out_dir / name, data)

    summary = _summary(scale, files, len(pydocs), len(docstrings), web_records, plan)
    summary["malformed"] = malformed
    summary["planted"]["malformed_records"] = len(malformed)
    summary["tasks"] = {
        "file": "tasks/demo_qa.jsonl",
        "items": len(tasks),
        "fields": ["question", "context"],
        "topics_held_out_of_pydocs": sorted(
            set(PYDOC_TOPICS) - {r["title"] for r in pydoc_topic_records()}
        ),
    }
    text = json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    _write_if_changed(out_dir / "demo_corpus.json", text.encode("utf-8"))
    return summary


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave a file that already holds exactly `data` alone (its mtime too), so a rebuilt
    demo corpus looks unchanged to everything that watches files."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _summary(scale, files, pydocs, docstrings, web_records, plan) -> dict:
    documents = {"pydocs": pydocs, "docstrings": docstrings, "web": len(web_records)}
    planted_ids = {entry["id"] for entries in plan.values() for entry in entries}
    sources = {
        source: {
            "format": "parquet" if source == "web" else "jsonl",
            "files": sorted(name for name in files if name.startswith(f"{source}/")),
            "documents": documents[source],
        }
        for source in FILES_PER_SOURCE
    }
    web_text = sum(len(r["text"].encode("utf-8")) for r in web_records)
    return {
        "name": "demo",
        "seed": DEMO_SEED,
        "scale": scale,
        "sources": sources,
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(files.items())
        },
        "documents_total": sum(documents.values()),
        "web_text_bytes": web_text,
        "web_prose_pages": len(web_records) - len(planted_ids),
        "planted": {kind: len(entries) for kind, entries in plan.items()},
        "web_plan": plan,
    }
