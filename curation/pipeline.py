"""`curate run`: the spec becomes a Dask DAG of stages, each materialised and resumable.

Layout (DESIGN.md): OUT/spec.yaml, OUT/stages/NN_<stage>/{data,ledger,stats}/ plus
`_manifest.json`, OUT/curated/<source>/, OUT/ledger/, OUT/tokenizer.json, OUT/tokens/.

Resume: a stage's key hashes its parameters and the key of its input. A finished stage
whose manifest has the same key is skipped; an unfinished one keeps every partition whose
stats file exists (written last, atomically) and redoes the rest; a stage whose key
changed is cleared and redone, and so is everything after it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from curation.atomic import atomic_write_parquet, write_json_atomic, write_text_atomic
from curation.batches import map_batched
from curation.documents import DOCUMENT_COLUMNS, LEDGER_SCHEMA
from curation.duplicate_ids import needs_check, resolve_duplicate_ids
from curation.input_hashes import content_fingerprint
from curation.layout import STEP_MANIFEST as MANIFEST
from curation.read_stage import list_input_files, read_file_once, read_partitions
from curation.rerun_reason import rerun_reason
from curation.spec import Spec
from curation.stage_context import ClusterStageContext, read_partition
from curation.stage_stats import add_stats, check_accounting, partition_stats
from curation.stages.registry import STAGES
from curation.storage import copy_file, out_path, remove_tree
from curation.tokenize import tokenize_corpus, train_or_load_tokenizer

KEY_FILE = "_key"


@dataclass
class StageResult:
    name: str
    folder: Path
    partitions: list[Path]
    totals: dict
    skipped: bool


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _open_stage_dir(folder: Path, key: str, force: bool, params: dict,
                    inputs_changed: str = "its input changed (an earlier stage reran)"
                    ) -> dict | None:
    """The finished manifest if the stage is done with this key; else prepare the folder
    (saying why, when the stage ran before)."""
    manifest_path = folder / MANIFEST
    reason = rerun_reason(manifest_path, folder / KEY_FILE, key, params, force, inputs_changed)
    if reason:
        print(f"{folder.name.split('_', 1)[-1]}: rerun: {reason}", file=sys.stderr)
    if not force and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("key") == key:
            return manifest
    key_path = folder / KEY_FILE
    if folder.exists() and (force or not key_path.exists() or key_path.read_text() != key):
        remove_tree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    write_text_atomic(key_path, key)
    return None


def _finish_stage(folder: Path, name: str, key: str, params: dict, stats: list[dict],
                  partitions: list[Path], started: float,
                  sources_in_scope: list[str] | None = None) -> dict:
    """The manifest; `totals.skipped_sources` lists the sources the stage was not applied to."""
    totals = add_stats(stats)
    if sources_in_scope is not None:
        totals["skipped_sources"] = sorted(set(totals["by_source"]) - set(sources_in_scope))
    manifest = {
        "stage": name, "key": key, "params": params, "complete": True,
        "seconds": round(time.perf_counter() - started, 3),
        "partitions": [str(p.relative_to(folder)) for p in partitions],
        "totals": totals, "per_partition": stats,
    }
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def run_read(spec: Spec, out: Path, client, force: bool) -> StageResult:
    folder = out / "stages" / "00_read"
    files = list_input_files(spec)
    params = {"sources": [s.model_dump(mode="json") for s in spec.sources],
              "read": spec.read.model_dump(mode="json")}
    key = _key("read", params,
               content_fingerprint(files, out / "stages" / "_input_hashes.json", client))
    done = _open_stage_dir(folder, key, force, params, "input files changed")
    skipped = done is not None
    if skipped:
        print("read: finished earlier with the same inputs; skipped", file=sys.stderr)
    else:
        started = time.perf_counter()
        sources = {s.name: s for s in spec.sources}
        check_ids = needs_check(spec)
        stats = [p for result in map_batched(client, read_file_once, files, sources, spec.read,
                                             str(folder), check_ids, desc="read", retries=2)
                 for p in result["partitions"]]
        if check_ids:
            changed = resolve_duplicate_ids(folder, [f.path for f in files],
                                            spec.read.on_duplicate_id, client,
                                            sum(p["kept"] for p in stats))
            stats = [changed.get(p["partition"], p) for p in stats]
        done = _finish_stage(folder, "read", key, params, stats, read_partitions(folder),
                             started)
    return StageResult("read", folder, [folder / p for p in done["partitions"]],
                       done["totals"], skipped)


def process_partition_task(stage, in_path: str, part: int, folder: str) -> dict:
    """Run one stage on one partition on a worker; write data, ledger, then stats. A
    partition whose stats exist was finished by an earlier run: its stats are returned."""
    folder = out_path(folder)
    done = folder / "stats" / f"part-{part:05d}.json"
    if done.exists():
        return json.loads(done.read_text())
    docs = read_partition(in_path)
    result = stage.process(docs, part, folder)
    kept = result.kept.reset_index(drop=True)
    ledger = result.ledger.reset_index(drop=True)
    check_accounting(stage.name, part, docs, kept, ledger)
    name = f"part-{part:05d}.parquet"
    atomic_write_parquet(ledger, folder / "ledger" / name, schema=LEDGER_SCHEMA)
    atomic_write_parquet(kept, folder / "data" / name)
    stats = partition_stats(name, docs, kept, ledger)
    write_json_atomic(folder / "stats" / f"part-{part:05d}.json", stats)
    return stats


def _process_numbered_partition(numbered: tuple[int, str], stage, folder: str) -> dict:
    part, in_path = numbered
    return process_partition_task(stage, in_path, part, folder)


def run_stage(stage, index: int, previous: StageResult, spec: Spec, out: Path, client,
              force: bool) -> StageResult:
    folder = out / "stages" / f"{index:02d}_{stage.name}"
    params = stage.params()
    key = _key(stage.name, params, spec.seed, json.loads((previous.folder / MANIFEST)
                                                         .read_text())["key"])
    recorded = {**params, "seed": spec.seed}  # all the key holds besides the input's key
    done = _open_stage_dir(folder, key, force, recorded)
    if done is None:
        started = time.perf_counter()
        scope = stage.sources_in_scope()
        ctx = ClusterStageContext(spec, out, folder, previous.partitions, client, scope)
        stage.prepare(ctx)
        stats = map_batched(client, _process_numbered_partition,
                            list(enumerate(map(str, previous.partitions))), stage, str(folder),
                            desc=stage.name, retries=2)
        parts = [folder / "data" / f"part-{k:05d}.parquet"
                 for k in range(len(previous.partitions))]
        done = _finish_stage(folder, stage.name, key, recorded, stats, parts, started, scope)
        skipped = False
    else:
        skipped = True
    return StageResult(stage.name, folder, [folder / p for p in done["partitions"]],
                       done["totals"], skipped)


def enabled_stages(spec: Spec) -> list[tuple[int, object]]:
    """(folder number, stage) for every stage the spec turns on, in the registry's order."""
    stages = []
    for index, cls in enumerate(STAGES, start=1):
        config = getattr(spec.stages, cls.name)
        if config is not None:
            stages.append((index, cls(config, spec)))
    return stages


def _split_by_source_task(numbered: tuple[int, str], curated: str) -> None:
    part, in_path = numbered
    docs = read_partition(in_path)
    for source, group in docs.groupby("source", sort=True):
        columns = DOCUMENT_COLUMNS + [c for c in group.columns if c not in DOCUMENT_COLUMNS]
        atomic_write_parquet(group[columns].reset_index(drop=True),
                             out_path(curated) / str(source) / f"part-{part:05d}.parquet")


def _copy_pair(pair: tuple[str, str]) -> None:
    copy_file(out_path(pair[0]), out_path(pair[1]))


def finalize(results: list[StageResult], out: Path, client) -> None:
    """OUT/curated/<source>/ from the last stage, OUT/ledger/ as every stage's ledger."""
    last = results[-1]
    key = json.loads((last.folder / MANIFEST).read_text())["key"]
    marker = out / "curated" / MANIFEST
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return
    for name in ("curated", "ledger"):
        remove_tree(out / name)
    map_batched(client, _split_by_source_task, list(enumerate(map(str, last.partitions))),
                str(out / "curated"), desc="curated", retries=2)
    ledger_dir = out / "ledger"
    ledger_dir.mkdir(parents=True)
    copies = [(str(path), str(ledger_dir / f"{result.folder.name}-{path.name}"))
              for result in results
              for path in sorted((result.folder / "ledger").glob("*.parquet"))]
    map_batched(client, _copy_pair, copies)  # on the workers: remote copies are requests
    write_json_atomic(marker, {"key": key})


def freeze_spec(spec: Spec, out: Path) -> None:
    header = f"# frozen by `curate run`; spec sha256: {spec.hash()}\n" \
             f"# relative paths are relative to: {spec.base_dir}\n"
    write_text_atomic(out / "spec.yaml", header + spec.to_yaml())


def tokenize(spec: Spec, out: Path, client, curated_key: str, force: bool) -> None:
    """OUT/tokenizer.json and OUT/tokens/<source>/ shards; skipped when already done."""
    params = {"tokenizer": spec.tokenizer.model_dump(mode="json"), "curated": curated_key}
    marker = out / "tokens" / MANIFEST
    key = _key("tokenize", params)
    if not force and marker.exists() and json.loads(marker.read_text()).get("key") == key:
        print("tokenize: finished earlier with the same inputs; skipped", file=sys.stderr)
        return
    started = time.perf_counter()
    train_or_load_tokenizer(spec.tokenizer, out / "curated", out, spec.base_dir, spec.seed,
                            client)
    manifests = tokenize_corpus(spec.tokenizer, out / "curated", out / "tokens",
                                out / "tokenizer.json", client)
    write_json_atomic(marker, {"key": key, "sources": sorted(manifests),
                               "seconds": round(time.perf_counter() - started, 3)})


def run_stages(spec: Spec, out: Path, client, force: bool = False,
               until: str | None = None) -> list[StageResult]:
    """Read, then every enabled stage in order (stopping before `until`, when given)."""
    out = out_path(out)
    out.mkdir(parents=True, exist_ok=True)
    freeze_spec(spec, out)
    results = [run_read(spec, out, client, force)]
    for index, stage in enabled_stages(spec):
        if stage.name == until:
            break
        result = run_stage(stage, index, results[-1], spec, out, client, force)
        if result.skipped:
            print(f"{stage.name}: finished earlier with the same inputs; skipped",
                  file=sys.stderr)
        results.append(result)
    return results


def run_pipeline(spec: Spec, out: Path, client, force: bool = False) -> list[StageResult]:
    """Run every enabled stage, then write curated data, the ledger and token shards."""
    out = out_path(out)
    results = run_stages(spec, out, client, force)
    finalize(results, out, client)
    for _, stage in enabled_stages(spec):
        stage.summarize(out, client)
    if spec.tokenizer is not None:
        curated_key = json.loads((out / "curated" / MANIFEST).read_text())["key"]
        tokenize(spec, out, client, curated_key, force)
    return results
