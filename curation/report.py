"""`curate report OUT`: the run's accounting, rebuilt from what is on disk."""

from __future__ import annotations

import json
from pathlib import Path

from curation.atomic import write_text_atomic
from curation.summary import format_table, markdown_table, summary_rows


def stage_totals(out: Path) -> list[tuple[str, dict]]:
    """(stage, totals) for every finished stage folder under OUT/stages, in order."""
    totals = []
    for manifest_path in sorted((Path(out) / "stages").glob("*/_manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        totals.append((manifest["stage"], manifest["totals"]))
    if not totals:
        raise FileNotFoundError(f"{out}: no finished stages under {Path(out) / 'stages'} "
                                "(is this a `curate run` output directory?)")
    return totals


def summary_text(out: Path) -> str:
    return format_table(summary_rows(stage_totals(out)))


def write_report(out: Path) -> Path:
    """Write OUT/report.md; return its path."""
    out = Path(out)
    rows = summary_rows(stage_totals(out))
    text = "\n".join([
        f"# Curation report: {out.resolve().name}", "",
        "Documents and text bytes in and out of every stage, per source. Every removed or "
        "modified document has a row in `ledger/` with its stage and reason.", "",
        markdown_table(rows), "",
    ])
    path = out / "report.md"
    write_text_atomic(path, text)
    return path
