"""What the duplicate-id check costs the `read` step: demo corpus, id check on vs off.

The check runs when some source has `id_field` (the demo's pydocs and docstrings do); "off"
is the same corpus with `id_field` removed (default ids, unique by construction, no check).
Both runs use one 2-worker LocalCluster, alternately, `--repeats` times; the read step's
wall time is its manifest's `seconds`.

    .venv/bin/python bench/duplicate_ids.py [--scale 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def read_seconds(spec_path: Path, out: Path, client) -> tuple[float, dict]:
    from curation.pipeline import run_stages
    from curation.spec import load_spec

    run_stages(load_spec(spec_path), out, client, force=True, until="normalize")
    manifest = json.loads((out / "stages" / "00_read" / "_manifest.json").read_text())
    return manifest["seconds"], manifest["totals"]


def main() -> None:
    from curation.cluster import dask_client
    from curation.demo_corpus import build_demo_corpus

    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_demo_corpus(root / "demo_data", scale=args.scale)
        (root / "corpus_specs").mkdir()
        spec = yaml.safe_load((ROOT / "corpus_specs" / "demo.yaml").read_text())
        spec["stages"] = {"normalize": {}}
        spec.pop("tokenizer", None)
        (root / "corpus_specs" / "on.yaml").write_text(yaml.safe_dump(spec))
        for source in spec["sources"]:
            source.pop("id_field", None)
        (root / "corpus_specs" / "off.yaml").write_text(yaml.safe_dump(spec))
        times = {"on": [], "off": []}
        with dask_client(workers=2, quiet=True) as client:
            for _ in range(args.repeats):
                for mode in ("off", "on"):
                    seconds, totals = read_seconds(root / "corpus_specs" / f"{mode}.yaml",
                                                   root / f"out-{mode}", client)
                    times[mode].append(seconds)
        on, off = statistics.median(times["on"]), statistics.median(times["off"])
        print(f"scale {args.scale}: {totals['docs_in']:,} records; read step median of "
              f"{args.repeats}: check off {off:.2f} s, on {on:.2f} s "
              f"(+{on - off:.2f} s, x{on / off:.2f})")


if __name__ == "__main__":
    main()
