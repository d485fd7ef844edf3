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
            changed = sorted(k for k in set(old or {}) | set(new) if
                             (old or {}).get(k) != new.get(k))
            return f"parameters changed ({', '.join(changed)})"
        return inputs
    if key_path.exists():
        if key_path.read_text() == key:
            return "unfinished: finishing the parts an earlier run did not"
        return "unfinished earlier run with other inputs or parameters: starting over"
    return None
