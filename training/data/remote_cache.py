"""A curated OUT on object storage (`data.curated: s3://bucket/run`), copied to a local cache.

Shards are memory-mapped, and a memory map needs a local file: before the loader opens
anything, the token shards (with their manifests, the frozen spec and the tokenizer) are
copied into `$TEXTMILL_DATA_CACHE/<hash of the URL>/` (default `~/.cache/textmill/curated`),
and every shard is checked against its manifest's sha256 before it is moved into place. A
later start finds the copy complete (a marker records the manifests it was made from) and
downloads nothing; a changed manifest fetches what changed. Ranks on one node share the copy:
the first one to take the folder's lock makes it, the others then find it done.

Endpoint and credentials are s3fs's own (AWS_* variables, ~/.aws, fsspec configuration).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from curation.shards import file_sha256
from curation.storage import is_remote, out_path
from training.data.shards import MANIFEST_NAME, ShardError

CACHE_ENV = "TEXTMILL_DATA_CACHE"
DONE_NAME = "_copied.json"
SMALL_FILES = ("spec.yaml", "tokenizer.json")


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "textmill" / "curated")


def local_curated(curated: str | os.PathLike, cache_root: Path | None = None) -> Path:
    """The curated OUT as a local folder: itself when local, else a verified local copy."""
    if not is_remote(curated):
        return Path(curated)
    source = out_path(curated)
    key = hashlib.sha256(str(source).rstrip("/").encode()).hexdigest()[:16]
    local = Path(cache_root or default_cache_root()) / key
    local.mkdir(parents=True, exist_ok=True)
    with _locked(local / ".lock"):
        manifests = {p.parent.name: p.read_text(encoding="utf-8")
                     for p in sorted((source / "tokens").glob(f"*/{MANIFEST_NAME}"))}
        if not manifests:
            raise ShardError(f"{source / 'tokens'}: no token manifests (did the run have a "
                             "tokenizer?)")
        stamp = hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()
        done = local / DONE_NAME
        if done.is_file() and json.loads(done.read_text())["manifests"] == stamp:
            return local
        done.unlink(missing_ok=True)
        for name in SMALL_FILES:
            if (source / name).is_file():
                _download(source / name, local / name)
        for name, text in manifests.items():
            for shard in json.loads(text)["shards"]:
                _fetch_verified(source / "tokens" / name / shard["file"],
                                local / "tokens" / name / shard["file"], shard["sha256"])
            _write(local / "tokens" / name / MANIFEST_NAME, text.encode("utf-8"))
        _write(done, json.dumps({"source": str(source), "manifests": stamp}).encode())
    return local


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_verified(remote, target: Path, sha256: str) -> None:
    """Copy one shard unless an identical one is already there; never keep a bad copy."""
    if target.is_file() and file_sha256(target) == sha256:
        return
    tmp = _download(remote, target, keep_temp=True)
    got = file_sha256(tmp)
    if got != sha256:
        tmp.unlink()
        raise ShardError(f"{remote}: sha256 {got} does not match its manifest's {sha256} "
                         "(corrupt or replaced)")
    os.replace(tmp, target)


def _download(remote, target: Path, keep_temp: bool = False) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        remote.fs.get_file(remote.path, tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if keep_temp:
        return Path(tmp)
    os.replace(tmp, target)
    return target


def _write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, target)
