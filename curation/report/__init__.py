"""The curation report: the end-of-run table, report.md, report.html and their plots.

`build` assembles the sections, `data` reads the facts a run left in OUT, `plots` draws
the PNGs, `html` and `build.render_markdown` render the same blocks, `summary` formats the
terminal table. Callers need only the three names below.
"""

from curation.report.build import stage_totals, summary_text, write_report

__all__ = ["stage_totals", "summary_text", "write_report"]
