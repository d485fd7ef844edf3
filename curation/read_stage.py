"""The `read` step: raw source files become parquet partitions of documents.

Each input file is one task that streams the file and writes partitions of at most
`read.partition_rows` documents, so a worker reads its own file and memory stays bounded
by the partition size. Malformed records become ledger rows with stage `read`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from curation.atomic import atomic_write_parquet, write_json_atomic
from curation.documents import DOCUMENT_SCHEMA, LEDGER_SCHEMA
from curation.duplicate_ids import write_keys
from curation.io import expand_paths, read_documents
from curation.stage_stats import partition_stats
from curation.storage import out_path


@dataclass(frozen=True)
class InputFile:
    index: int
    source: str
    path: str
    key: str  # the file's name inside document ids: <source>/<key>/<row>


def list_input_files(spec) -> list[InputFile]:
    """Every input file of every source, in a fixed order (sources, then sorted paths)."""
    files: list[InputFile] = []
    for source in spec.sources:
        paths = expand_paths(source.paths, spec.base_dir)
        keys = _file_keys(paths)
        for path, key in zip(paths, keys, strict=True):
            files.append(InputFile(len(files), source.name, path, key))
    return files


def _file_keys(paths: list[str]) -> list[str]:
    """Short, stable names: the path relative to the files' common folder."""
    if len(paths) == 1:
        return [paths[0].rstrip("/").rsplit("/", 1)[-1]]
    common = os.path.commonpath([p.split("://", 1)[-1] for p in paths])
    return [p.split("://", 1)[-1][len(common):].lstrip("/") for p in paths]


def read_file_task(file: InputFile, source_spec, read_config, stage_dir: str,
                   write_id_keys: bool = False) -> dict:
    """Stream one input file into partitions; write its stats last (marks it done).

    With `write_id_keys`, each partition's ids also go to a keys file for the uniqueness
    check (`curation.duplicate_ids`)."""
    stage_dir = out_path(stage_dir)
    stats = []
    chunks = read_documents(
        file.path, source=file.source, file_key=file.key, fmt=source_spec.format,
        text_field=source_spec.text_field, id_field=source_spec.id_field,
        max_record_bytes=read_config.max_record_bytes, chunk_rows=read_config.partition_rows,
    )
    for chunk, (docs, ledger) in enumerate(chunks):
        name = f"f{file.index:05d}-c{chunk:05d}.parquet"
        atomic_write_parquet(ledger, stage_dir / "ledger" / name, schema=LEDGER_SCHEMA)
        atomic_write_parquet(docs[DOCUMENT_SCHEMA.names], stage_dir / "data" / name,
                             schema=DOCUMENT_SCHEMA)
        if write_id_keys:
            write_keys(docs, file.index, name, stage_dir)
        stats.append(partition_stats(name, None, docs, ledger))
    result = {"file": file.path, "source": file.source, "partitions": stats}
    write_json_atomic(stage_dir / "stats" / f"f{file.index:05d}.json", result)
    return result


def read_file_once(file: InputFile, sources: dict, read_config, stage_dir: str,
                   write_id_keys: bool = False) -> dict:
    """`read_file_task`, unless an earlier run finished this file (its stats exist)."""
    done = out_path(stage_dir) / "stats" / f"f{file.index:05d}.json"
    if done.exists():
        return json.loads(done.read_text())
    return read_file_task(file, sources[file.source], read_config, stage_dir, write_id_keys)


def read_partitions(stage_dir) -> list:
    """The read step's partitions in order (by file, then chunk)."""
    return sorted((stage_dir / "data").glob("f*-c*.parquet"))
