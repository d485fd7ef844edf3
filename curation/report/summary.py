"""The table printed at the end of a run: documents and bytes in/out per stage and source."""

from __future__ import annotations


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def summary_rows(stage_totals: list[tuple[str, dict]]) -> list[list[str]]:
    """One row per (stage, source) plus a stage total: docs in/kept/removed/modified, bytes,
    and whether the stage ran on the source (`no`: out of its only/exempt scope)."""
    rows = []
    for stage, totals in stage_totals:
        skipped = set(totals.get("skipped_sources", ()))
        for source, c in totals["by_source"].items():
            rows.append(_row(stage, source, c, "no" if source in skipped else "yes"))
        sources = len(totals["by_source"])
        ran = f"{sources - len(skipped)} of {sources}" if skipped else "all"
        rows.append(_row(stage, "(all)", totals, ran))
    return rows


def _row(stage: str, source: str, c: dict, ran: str) -> list[str]:
    return [stage, source, ran, f"{c['docs_in']:,}", f"{c['kept']:,}", f"{c['removed']:,}",
            f"{c['modified']:,}", _human_bytes(c["bytes_in"]), _human_bytes(c["bytes_out"])]


HEADER = ["stage", "source", "ran", "docs in", "kept", "removed", "modified", "bytes in",
          "bytes out"]


def format_table(rows: list[list[str]]) -> str:
    """A plain-text table, right-aligned numbers, for the terminal."""
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(r):
        return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths, strict=True)))
    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
