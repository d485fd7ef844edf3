"""`curate inspect`: look inside a run's outputs — a token shard, the blended stream, a document.

Each function returns the text the command prints, so notebooks and tests use the same
views. Problems raise InspectError naming the path or id that is missing or malformed.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.report import data
from curation.shards import MANIFEST_NAME, file_sha256
from curation.storage import joined, out_path, read_ipc_table, resolved

TOKENIZER_FILE = "tokenizer.json"
SHOWN_CHARS = 600


class InspectError(ValueError):
    """What was asked for is missing or is not what the command expects; names the place."""


def _indent(text: str, limit: int = SHOWN_CHARS) -> str:
    if len(text) > limit:
        text = text[:limit] + f" … [{len(text) - limit:,} more characters]"
    return textwrap.indent(text, "    ")


def find_tokenizer(start: Path, manifest: dict | None = None) -> Path | None:
    """The manifest's tokenizer (relative to its folder), else the nearest OUT/tokenizer.json."""
    start = resolved(start)
    if manifest and manifest.get("tokenizer", {}).get("path"):
        candidate = joined(start, manifest["tokenizer"]["path"])
        if candidate.is_file():
            return candidate
    for folder in [start, *start.parents]:
        if (folder / TOKENIZER_FILE).is_file():
            return folder / TOKENIZER_FILE
    return None


def _decoder(tokenizer_path: Path | None):
    """tokens -> text; without a tokenizer, the ids themselves."""
    if tokenizer_path is None:
        return lambda ids: "token ids: " + " ".join(map(str, np.asarray(ids)[:200]))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(out_path(tokenizer_path).read_text(encoding="utf-8"))
    return lambda ids: tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def _read_shard(path: Path) -> pa.Table:
    try:
        return read_ipc_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InspectError(f"{path}: not an Arrow IPC token shard ({err})") from err


def _shard_lines(path: Path, table: pa.Table, entry: dict | None) -> list[str]:
    tokens = table.column("tokens") if "tokens" in table.column_names else None
    if tokens is None or "id" not in table.column_names:
        raise InspectError(f"{path}: expected columns id and tokens, found {table.column_names}")
    count = int(sum(len(chunk.values) for chunk in tokens.chunks))
    lines = [f"{path.name}: {table.num_rows:,} documents, {count:,} tokens, "
             f"dtype {tokens.type.value_type}, {path.stat().st_size:,} bytes"]
    if entry is None:
        lines.append("  sha256: no manifest entry for this file; not checked")
    else:
        ok = file_sha256(path) == entry["sha256"]
        agree = (table.num_rows, count) == (entry["documents"], entry["tokens"])
        lines.append(f"  sha256: {'OK' if ok else 'MISMATCH (corrupt or replaced)'}; counts "
                     f"{'match' if agree else 'DIFFER from'} the manifest")
    return lines


def _first_document(table: pa.Table, tokenizer_path: Path | None) -> list[str]:
    if table.num_rows == 0:
        return ["first document: (the shard is empty)"]
    ids = table.column("tokens")[0].values.to_numpy()
    where = tokenizer_path or "no tokenizer.json found, showing ids"
    return [f"first document {table.column('id')[0].as_py()!r} ({len(ids):,} tokens, "
            f"decoded with {where}):", _indent(_decoder(tokenizer_path)(ids))]


def inspect_shard(path: Path) -> str:
    """Summary of one .arrow shard, or of every shard a manifest.json lists."""
    path = out_path(path)
    if not path.exists():
        raise InspectError(f"{path}: no such file")
    if path.is_dir():
        if not (path / MANIFEST_NAME).is_file():
            return _source_folders(path)
        path = path / MANIFEST_NAME
    if path.suffix == ".json":
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            shards = manifest["shards"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InspectError(f"{path}: not a token manifest ({err!r})") from err
        lines = [f"{path}: source {manifest.get('source', '?')!r}, "
                 f"{manifest.get('documents', 0):,} documents, {manifest.get('tokens', 0):,} "
                 f"tokens in {len(shards)} shards; dtype {manifest.get('dtype')}, "
                 f"vocab {manifest.get('vocab_size')}, eod id {manifest.get('eod_id')}"]
        first = None
        for entry in shards:
            shard = path.parent / entry["file"]
            if not shard.is_file():
                raise InspectError(f"{shard}: listed in {path} but missing")
            table = _read_shard(shard)
            first = table if first is None else first
            lines += ["  " + line for line in _shard_lines(shard, table, entry)]
        tokenizer = find_tokenizer(path.parent, manifest)
        return "\n".join(lines + (_first_document(first, tokenizer) if first else []))
    if path.suffix != ".arrow":
        raise InspectError(f"{path}: expected a .arrow token shard or a {MANIFEST_NAME}")
    table = _read_shard(path)
    manifest_path = path.parent / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    entry = next((s for s in (manifest or {}).get("shards", []) if s["file"] == path.name), None)
    lines = _shard_lines(path, table, entry)
    return "\n".join(lines + _first_document(table, find_tokenizer(path.parent, manifest)))


def _source_folders(tokens_dir: Path) -> str:
    """OUT/tokens/ holds one folder per source: list them (from their manifests)."""
    sources = sorted(p.parent for p in tokens_dir.glob(f"*/{MANIFEST_NAME}"))
    if not sources:
        raise InspectError(f"{tokens_dir}: no {MANIFEST_NAME} in this folder or its "
                           "sub-folders")
    lines = [f"{tokens_dir}: token shards of {len(sources)} sources; inspect one with "
             f"`curate inspect shard {tokens_dir / sources[0].name}`"]
    for folder in sources:
        try:
            manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
            shards = len(manifest["shards"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InspectError(f"{folder / MANIFEST_NAME}: not a token manifest ({err!r})") \
                from err
        lines.append(f"  {folder.name}/: {manifest.get('documents', 0):,} documents, "
                     f"{manifest.get('tokens', 0):,} tokens in {shards} shards")
    return "\n".join(lines)


def _require_out(out: Path) -> Path:
    out = out_path(out)
    if not out.is_dir():
        raise InspectError(f"{out}: no such output folder")
    return out


def inspect_samples(out: Path, n: int = 3, seq_len: int = 128, split: str = "train") -> str:
    """The first `n` samples of the blended stream the trainer would read, decoded."""
    from training.data import build_blended_dataset

    out = _require_out(out)
    if not (out / "tokens").is_dir():
        raise InspectError(f"{out / 'tokens'}: no token shards (did the run have a tokenizer?)")
    seed = int(data.frozen_spec(out).get("seed", 0))
    with tempfile.TemporaryDirectory(prefix="inspect-index-") as cache:
        splits = build_blended_dataset(out, seq_len, seed, num_samples={split: n},
                                       cache_dir=Path(cache))
        if split not in splits:
            raise InspectError(f"{out}: the blend has no samples in split {split!r} "
                               f"(splits with samples: {sorted(splits) or 'none'})")
        dataset = splits[split]
        decode = _decoder(find_tokenizer(out))
        lines = [f"{out}: {split} split, {len(dataset):,} samples of {seq_len} tokens (+1 "
                 f"for the shifted target), sources {', '.join(dataset.sources)}"]
        for i in range(min(n, len(dataset))):
            tokens = dataset[i]
            source = dataset.sources[int(dataset.blend_source[i])]
            boundaries = int((tokens == dataset.eod_id).sum())
            lines += [f"sample {i} from {source} ({len(tokens)} tokens, {boundaries} "
                      "end-of-document tokens):", _indent(decode(tokens), limit=4 * SHOWN_CHARS)]
    return "\n".join(lines)


def inspect_doc(out: Path, doc_id: str) -> str:
    """A document's fate: its ledger rows in stage order, and where it is in curated/."""
    out = _require_out(out)
    if not (out / "ledger").is_dir() and not (out / "curated").is_dir():
        raise InspectError(f"{out}: no ledger/ or curated/ (is this a `curate run` output?)")
    order = {run.name: k for k, run in enumerate(data.stage_runs(out))}
    rows = data.read_parquet_columns(sorted((out / "ledger").glob("*.parquet")),
                                     ["id", "source", "stage", "action", "reason", "detail"],
                                     ids=[doc_id])
    rows = rows.assign(order=rows["stage"].map(order)).sort_values("order", kind="stable")
    found = []
    for part in sorted((out / "curated").glob("*/*.parquet")):
        hit = data.read_parquet_columns([part], ["id", "source", "text"], ids=[doc_id])
        found += [(part, text, source) for text, source in zip(hit["text"], hit["source"],
                                                                 strict=True)]
    if rows.empty and not found:
        raise InspectError(f"id {doc_id!r}: not in {out / 'ledger'} nor in {out / 'curated'}")
    source = found[0][2] if found else rows["source"].iloc[0]
    lines = [f"document {doc_id!r} (source {source})", "ledger:"]
    lines += [f"  {r.stage:<14} {r.action:<9} {r.reason:<28} {data.excerpt(r.detail, 200)}"
              for r in rows.itertuples()] or ["  (no ledger rows: never removed or modified)"]
    if found:
        part, text, _ = found[0]
        lines += [f"curated: yes, in {part.relative_to(out)}", "text (curated):", _indent(text)]
    else:
        removed = rows[rows["action"] == "removed"]
        stage = removed["stage"].iloc[0] if len(removed) else rows["stage"].iloc[-1]
        lines.append(f"curated: no — removed by {stage} ({removed['reason'].iloc[0]})"
                     if len(removed) else "curated: no (not in curated/)")
        text = data.stage_input_texts(out, stage, [doc_id]).get(doc_id)
        if text is not None:
            lines += [f"text as {stage} received it:", _indent(text)]
    return "\n".join(lines)
