"""A curation run's outputs as bytes per relative path, wherever OUT lives (local or fsspec)."""

from __future__ import annotations

import fsspec

# What must be byte-identical between two runs of one spec (timings live in _manifest.json).
COMPARED = ("curated", "ledger", "tokens")


def output_bytes(out: str) -> dict[str, bytes]:
    """{path relative to OUT: content} for every compared file (stage manifests excluded)."""
    fs, root = fsspec.core.url_to_fs(str(out))
    root = root.rstrip("/")
    files = {}
    for folder in COMPARED:
        for path in fs.find(f"{root}/{folder}"):
            relative = path[len(root) + 1:]
            if not relative.endswith("_manifest.json"):
                files[relative] = fs.cat_file(path)
    return files


def assert_same_outputs(a: str, b: str) -> None:
    left, right = output_bytes(a), output_bytes(b)
    assert sorted(left) == sorted(right)
    assert any(p.endswith(".arrow") for p in left), "no token shards to compare"
    different = [p for p in left if left[p] != right[p]]
    assert not different, f"files that differ: {different}"
