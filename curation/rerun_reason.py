"""Why a stage that ran before runs again, in the words a user acts on.

A stage's key hashes its parameters and its input's key (the files, for `read`). The
finished manifest keeps the parameters, so a changed key is told apart: the parameters
differ, or they are the same and what came in changed. An unfinished stage (a `_key` file
and no manifest) is finished when its key matches, else redone.
"""

from __future__ import annotations

import json
from pathlib import Path


def rerun_reason(manifest_path: Path, key_path: Path, key: str, params: dict, force: bool,
                 inputs: str) -> str | None:
    """One phrase saying why the stage of this manifest and key file runs now, or None on
    a first run. `inputs` is what a same-parameters key change means for this stage.
    """
    if force and (manifest_path.exists() or key_path.exists()):
        return "forced (--force)"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            return "its manifest is unreadable"
        if manifest.get("key") == key:
            return None
        old = json.loads(json.dumps(manifest.get("params"), sort_keys=True, default=str))
        new = json.loads(json.dumps(params, sort_keys=True, default=str))
        if old != new:
            return f"parameters changed ({', '.join(changed_keys(old, new))})"
        return inputs
    if key_path.exists():
        if key_path.read_text() == key:
            return "unfinished: finishing the parts an earlier run did not"
        return "unfinished earlier run with other inputs or parameters: starting over"
    return None


def changed_keys(old: object, new: object, prefix: str = "") -> list[str]:
    """Dotted paths of the values that differ between two JSON-like parameter trees."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [prefix or "(all)"]
    changed = []
    for key in sorted(set(old) | set(new)):
        changed += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
    return [path.rstrip(".") for path in changed]
