"""Checks `pretrain` makes before any process starts, on what the config points at.

A wrong `data.curated` (raw input data, a missing path, a subfolder of OUT, an OUT whose spec
has no tokenizer) would otherwise surface in every rank as a traceback about a frozen spec or
a manifest. Here it is one line that says what to run instead. A source the spec names but
curation emptied (no shards, or none left) is not an error here: the loader skips it; an OUT
with no tokens at all is.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from curation.storage import is_remote
from training.data.dataset import blend_from_spec
from training.data.remote_cache import local_curated
from training.data.shards import MANIFEST_NAME, ShardError, read_manifest

SPEC_NAME = "spec.yaml"


class PreflightError(ValueError):
    """What the config points at cannot be trained on; the message says what to run."""


def check_curated(curated: str | Path) -> None:
    """Raise PreflightError unless `curated` is a finished `curate run` OUT with token shards
    and a blend (weights or epochs) the loader can use."""
    key = f"data.curated={curated}"
    if is_remote(curated):  # object storage: check (and train on) its verified local copy
        try:
            out = local_curated(curated)
        except (ShardError, OSError) as err:
            raise PreflightError(f"{key}: cannot copy its token shards: {err}") from None
    else:
        out = Path(curated)
    if not out.exists():
        raise PreflightError(f"{key}: no such folder; make it with `curate run SPEC --out {out}`")
    if not out.is_dir():
        raise PreflightError(f"{key} is a file, not a `curate run` output folder")
    spec_path = out / SPEC_NAME
    if not spec_path.is_file():
        parent = next((p for p in [*out.parents, *out.resolve().parents]
                       if (p / SPEC_NAME).is_file()), None)
        if parent is not None:
            raise PreflightError(f"{key} is inside the `curate run` output {parent}: "
                                 f"use --set data.curated={parent}")
        raise PreflightError(f"{key} is not a `curate run` output (no {SPEC_NAME}): run "
                             f"`curate run SPEC --out OUT` and pass --set data.curated=OUT")
    try:
        spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise PreflightError(f"{spec_path}: not a frozen spec ({err})") from None
    if not isinstance(spec, dict):
        raise PreflightError(f"{spec_path}: not a frozen spec (not a YAML mapping)")
    _check_tokens(out, key, spec)
    try:
        blend_from_spec(out)
    except (ValueError, KeyError, TypeError) as err:
        raise PreflightError(f"{key}: the spec's blend cannot be used: {err}") from None


def _check_tokens(out: Path, key: str, spec: dict) -> None:
    rerun = f"`curate run SPEC --out {out}` (finished stages are skipped)"
    if not spec.get("tokenizer"):
        raise PreflightError(f"{key} has no token shards: its spec has no `tokenizer:`; add "
                             f"`tokenizer: {{train: {{vocab_size: 8192}}}}` to the spec and "
                             f"rerun {rerun}")
    manifests = sorted((out / "tokens").glob(f"*/{MANIFEST_NAME}"))
    if not manifests:
        raise PreflightError(f"{key} has no token shards yet (no tokens/*/{MANIFEST_NAME}): "
                             f"finish it with {rerun}")
    tokens = 0
    for path in manifests:
        try:
            tokens += sum(int(s["tokens"]) for s in read_manifest(path.parent)["shards"])
        except ShardError as err:
            raise PreflightError(str(err)) from None
        except (KeyError, TypeError, ValueError) as err:
            raise PreflightError(f"{path}: not a token manifest ({err!r})") from None
    if tokens == 0:
        raise PreflightError(f"{key}: every source's token shards are empty (curation kept no "
                             f"document?); see {out / 'report.md'}")
