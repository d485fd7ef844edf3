"""Blend sources that curation filtered away: found before any index is built, then skipped
(the others' weights renormalised, said in one line) or, with `error`, one clear error.

A source is empty when `OUT/tokens/<name>/` has no manifest (curation removed every one of
its documents before tokenizing, or it never reached `tokens/`) or a manifest of 0 documents.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from training.data.shards import MANIFEST_NAME, ShardError

POLICIES = ("skip", "error")


class EmptySourceError(ShardError):
    """A blend names a source without tokens and `data.empty_sources` is `error`."""


def source_is_empty(tokens_dir: Path, name: str) -> bool:
    path = Path(tokens_dir) / name / MANIFEST_NAME
    if not path.is_file():
        return True
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get("documents", 1)) == 0
    except (json.JSONDecodeError, ValueError, TypeError):
        return False  # not ours to judge: the shard reader names what is wrong with it


def empty_sources(tokens_dir: Path, names: list[str]) -> list[str]:
    return [name for name in names if source_is_empty(tokens_dir, name)]


def drop_empty_sources(blend: dict[str, float], tokens_dir: Path, policy: str
                       ) -> tuple[dict[str, float], list[str]]:
    """(the blend without its empty sources, their names); raises EmptySourceError when
    `policy` is `error` and one is empty, or when every source is."""
    if policy not in POLICIES:
        raise ValueError(f"empty_sources must be one of {POLICIES}, got {policy!r}")
    empty = empty_sources(tokens_dir, list(blend))
    if not empty:
        return blend, []
    where = ", ".join(f"{name!r}" for name in empty)
    if len(empty) == len(blend):
        raise EmptySourceError(f"{Path(tokens_dir)}: no source of the blend has token shards "
                               f"({where})")
    if policy == "error":
        raise EmptySourceError(f"{Path(tokens_dir)}: no token shards for source(s) {where} "
                               "(curation removed all their documents, or they never reached "
                               "tokens/) and data.empty_sources is error; set "
                               "data.empty_sources: skip to train on the other sources")
    return {name: value for name, value in blend.items() if name not in empty}, empty


def announce_skipped(skipped: list[str], weights: dict[str, float]) -> None:
    """The one warning line: which sources were skipped and what the others now weigh."""
    shares = ", ".join(f"{name} {weight:.4g}" for name, weight in weights.items())
    print(f"warning: data: skipping source(s) {', '.join(skipped)} (no token shards); "
          f"blend renormalised: {shares}", file=sys.stderr, flush=True)
