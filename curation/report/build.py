"""`curate report OUT`: the run's accounting and plots, rebuilt from what is on disk.

The report is a list of sections, each a list of blocks (text, tables, images, bullet
lists); report.md and the self-contained report.html are two renderings of the same
blocks, and the PNGs live under OUT/report/. A section whose stage did not run is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from curation.atomic import write_text_atomic
from curation.report import data
from curation.report.summary import HEADER, format_table, summary_rows
from curation.stages.quality import weak_classifier_warning
from curation.storage import out_path, resolved

PLOTS_DIR = "report"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path  # relative to OUT
    caption: str


@dataclass
class Items:
    """A bullet list; each item is (code, text): a monospace id and its plain text."""

    items: list[tuple[str, str]]


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)


def _draw(name: str, args: tuple, path: str) -> None:
    from curation.report import plots

    getattr(plots, name)(*args, out_path(path))


class Painter:
    """Draws the report's PNGs (`curation.report.plots`, by function name): on the
    cluster's workers, side by side, when there is a client (then the `curate` process
    neither imports matplotlib nor draws), else here, one after the other."""

    def __init__(self, client=None):
        self.client = client
        self.pending: list = []

    def __call__(self, name: str, *args, path: Path) -> Path:
        if self.client is None:
            _draw(name, args, str(path))
        else:
            self.pending.append(self.client.submit(_draw, name, args, str(path), pure=False))
        return path

    def wait(self) -> None:
        """Every PNG is written (a drawing's error is raised here)."""
        if self.pending:
            self.client.gather(self.pending)
            self.pending = []


def stage_totals(out: Path) -> list[tuple[str, dict]]:
    """(stage, totals) for every finished stage folder under OUT/stages, in order."""
    totals = [(run.name, run.manifest["totals"]) for run in data.stage_runs(out_path(out))]
    if not totals:
        raise FileNotFoundError(f"{out}: no finished stages under {out_path(out) / 'stages'} "
                                "(is this a `curate run` output directory?)")
    return totals


def summary_text(out: Path) -> str:
    return format_table(summary_rows(stage_totals(out)))


def _n(value) -> str:
    return f"{int(value):,}"


def _funnel_section(out: Path, funnel: pd.DataFrame, tokens: dict, draw: Painter) -> Section:
    stages = list(dict.fromkeys(funnel["stage"]))
    sources = sorted(funnel["source"].unique())
    blocks: list = [
        "What is left of every source after each stage: `input` is what the read step saw "
        "(malformed records included); the documents table ends with the documents in the "
        "token shards, and the plot's last panel counts their tokens.",
        Image(draw("plot_funnel", funnel, tokens, path=out / PLOTS_DIR / "funnel.png")
              .relative_to(out), "documents, bytes and tokens after each stage"),
    ]
    for column_in, column_out, what in (("docs_in", "kept", "Documents"),
                                        ("bytes_in", "bytes_out", "Text bytes")):
        rows = []
        last = ["tokenized docs"] if tokens and column_in == "docs_in" else []
        for source in [*sources, "(all)"]:
            chosen = funnel if source == "(all)" else funnel[funnel["source"] == source]
            per_stage = chosen.groupby("stage", sort=False)[[column_in, column_out]].sum()
            first = per_stage[column_in].iloc[0]
            row = [source, _n(first)] + [_n(per_stage[column_out].get(s, 0)) for s in stages]
            if last:
                names = sources if source == "(all)" else [source]
                row.append(_n(sum(tokens.get(n, {}).get("documents", 0) for n in names)))
            rows.append(row)
        blocks += [f"**{what}** after each stage:",
                   Table(["source", "input", *stages, *last], rows)]
    blocks += ["**Stage accounting** (documents in = kept + removed; modified documents "
               "are kept with changed text):", Table(HEADER, summary_rows(stage_totals(out)))]
    return Section("Funnel", blocks)


def _reasons_section(out: Path, facts: dict, client, draw: Painter) -> Section | None:
    counts = data.reason_counts(facts)
    if counts.empty:
        return None
    examples = data.reason_examples(out, facts, client)
    blocks: list = ["Every ledger row counted by stage, action and reason. `removed` documents "
                    "are gone; `modified` ones were kept with their text changed."]
    if (counts["action"] == "removed").any():
        blocks.append(Image(draw("plot_reasons", counts, path=out / PLOTS_DIR / "reasons.png")
                            .relative_to(out), "removed documents per reason"))
    blocks.append(Table(["stage", "action", "reason", "documents"],
                        [[r.stage, r.action, r.reason, _n(r.documents)]
                         for r in counts.itertuples()]))
    blocks.append("**Examples** (id, then the text the stage received, or the ledger detail "
                  "for unreadable records):")
    for r in counts.itertuples():
        blocks.append(f"*{r.stage} / {r.reason}*")
        blocks.append(Items(examples.get((r.stage, r.reason), [])))
    return Section("Removal reasons", blocks)


def _language_section(out: Path, facts: dict, draw: Painter) -> Section | None:
    table = data.languages(facts)
    if table is None:
        return None
    return Section("Languages", [
        "Detected language of the curated documents, and of the documents the language "
        "stage removed (not an allowed language, or too uncertain).",
        Image(draw("plot_languages", table, path=out / PLOTS_DIR / "languages.png")
              .relative_to(out), "documents per detected language"),
        Table(["lang", "curated", "removed by language"],
              [[r.lang, _n(r.curated), _n(r.removed)] for r in table.itertuples()]),
    ])


def _quality_section(out: Path, facts: dict, draw: Painter) -> Section | None:
    quality = data.quality_scores(out, facts)
    if quality is None:
        return None
    if quality.rule == "threshold":
        rule = f"keep a document when its score ≥ {quality.threshold:g}"
    else:
        rule = (f"GPT-3's Pareto sampling: keep when pareto(α={quality.alpha:g}) > 1 − score, "
                f"i.e. with probability (2 − score)^−{quality.alpha:g}")
    rows = [[r.source, _n(r.scored), _n(r.kept), _n(r.removed), "yes" if r.exempt else "no",
             f"{r.mean:.3f}"] for r in quality.per_source.itertuples()]
    blocks: list = [
        f"Keep rule: {rule}. Exempt sources are scored but never removed.",
        Image(draw("plot_quality", quality, path=out / PLOTS_DIR / "quality.png").relative_to(out),
              "quality-score histogram with the keep rule"),
        Table(["source", "scored", "kept", "removed", "exempt", "mean score"], rows),
    ]
    metrics = data.read_json(out / "quality" / "metrics.json")
    if metrics:
        counts = metrics.get("counts", {})
        warning = weak_classifier_warning(metrics)
        blocks += [f"**Classifier**: held-out AUC {metrics.get('auc', float('nan')):.3f}, "
                   f"precision {metrics.get('precision', float('nan')):.3f}, recall "
                   f"{metrics.get('recall', float('nan')):.3f} (positive class at score 0.5)"
                   + (f". **Warning**: {warning}." if warning else "."),
                   "Held-out documents of the positive and negative sources:",
                   Table(["metric", "value"],
                         [[k, f"{metrics[k]:.3f}"] for k in ("precision", "recall", "accuracy",
                                                             "auc") if k in metrics]
                         + [[k.replace("_", " "), _n(v)] for k, v in sorted(counts.items())])]
    return Section("Quality", blocks)


def _dedup_section(out: Path, facts: dict, draw: Painter) -> Section | None:
    sizes = data.cluster_sizes(facts)
    if sizes is None:
        return None
    removed = int(((sizes.index - 1) * sizes).sum())
    clusters = int(sizes.sum())
    return Section("Near-duplicate clusters", [
        "Connected components of MinHash-LSH candidate pairs that lost documents: one keeper "
        "per cluster (the highest source priority), the rest removed.",
        Image(draw("plot_cluster_sizes", sizes, path=out / PLOTS_DIR / "clusters.png")
              .relative_to(out), "cluster-size distribution"),
        Table(["clusters", "documents removed", "largest cluster", "mean size"],
              [[_n(clusters), _n(removed), _n(sizes.index.max()),
                f"{(sizes.index * sizes).sum() / clusters:.2f}"]]),
    ])


def _contamination_section(out: Path, draw: Painter) -> Section | None:
    summary = data.read_json(out / "decontamination.json")
    if summary is None:
        return None
    tasks = summary.get("tasks", {})
    runs = {run.name: run for run in data.stage_runs(out)}
    params = runs["decontaminate"].manifest["params"] if "decontaminate" in runs else {}
    ngram = params.get("config", params).get("ngram", "n")
    blocks: list = [f"Documents sharing a {ngram}-gram with a downstream task's text: the "
                    "matching span is cut out; a document cut into too many pieces is dropped."]
    if tasks:
        blocks.append(Image(draw("plot_contamination", tasks,
                                 path=out / PLOTS_DIR / "contamination.png").relative_to(out),
                            "contaminated documents per task"))
    blocks.append(Table(
        ["task", "documents hit", "cut", "dropped", "characters removed", "top n-gram"],
        [[name, _n(t["documents_hit"]), _n(t["documents_modified"]),
          _n(t["documents_dropped"]), _n(t["characters_removed"]),
          t["top_ngrams"][0]["ngram"] if t["top_ngrams"] else ""]
         for name, t in sorted(tasks.items())] or [["(none)", "0", "0", "0", "0", ""]]))
    return Section("Contamination", blocks)


def _selection_section(out: Path) -> Section | None:
    """The select stage: per source, the score distribution of chosen and not chosen."""
    summary = data.read_json(out / "selection.json")
    if summary is None:
        return None
    rows = [[source, side.replace("_", " "), _n(entry["docs"]), _n(entry["tokens"]),
             *(f"{entry[q]:.4g}" if q in entry else "" for q in ("p10", "p50", "p90"))]
            for source, sides in summary["sources"].items()
            for side, entry in sides.items()]
    return Section("Data selection", [
        f"Method `{summary['method']}`, budget {summary['budget']}: "
        f"{_n(summary['chosen_docs'])} of {_n(summary['pool_docs'])} documents chosen "
        f"({_n(summary['chosen_tokens'])} tokens). Lower scores are chosen first; the "
        "rest are in the ledger as `select.not_chosen` with their score.",
        Table(["source", "", "documents", "tokens", "score p10", "p50", "p90"],
              rows or [["(none)", "", "0", "0", "", "", ""]]),
    ])


def _blend_section(out: Path, train_tokens: int | None, draw: Painter) -> Section | None:
    blend = data.blend_table(out, train_tokens)
    if blend is None:
        return None
    seen = int(blend["train_tokens"].iloc[0])
    rows = [[r.source, _n(r.tokens), f"{100 * r.weight:.2f}%",
             "n/a" if np.isnan(r.epochs) else f"{r.epochs:.2f}"] for r in blend.itertuples()]
    rows.append(["total", _n(blend["tokens"].sum()), f"{100 * blend['weight'].sum():.2f}%", ""])
    return Section("Blend", [
        f"The training blend in the form of the MT-NLG paper's Table 2, for {seen:,} training "
        "tokens (`curate report --train-tokens N` to change): epochs = weight × training "
        "tokens / source tokens.",
        Table(["source", "tokens", "weight", "epochs"], rows),
        Image(draw("plot_blend", blend, path=out / PLOTS_DIR / "blend.png").relative_to(out),
              "corpus share vs blend weight"),
    ])


def build_sections(out: Path, train_tokens: int | None = None, client=None) -> list[Section]:
    """Every section whose inputs exist, in the order of the flow; draws the PNGs. Counts
    over documents are aggregated on `client`'s workers (here, file by file, when None)."""
    out = out_path(out)
    funnel = data.funnel(out)
    facts = data.gather_counts(out, client)
    draw = Painter(client)
    sections = [_funnel_section(out, funnel, data.token_totals(out), draw),
                _reasons_section(out, facts, client, draw), _language_section(out, facts, draw),
                _quality_section(out, facts, draw), _dedup_section(out, facts, draw),
                _contamination_section(out, draw), _selection_section(out),
                _blend_section(out, train_tokens, draw)]
    draw.wait()
    return [s for s in sections if s is not None]


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(_md_cell(c) for c in cells) + " |"


def render_markdown(title: str, intro: str, sections: list[Section]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, str):
                lines += [block, ""]
            elif isinstance(block, Table):
                lines += [_md_row(block.header), "|" + "---|" * len(block.header)]
                lines += [_md_row(row) for row in block.rows] + [""]
            elif isinstance(block, Image):
                lines += [f"![{block.caption}]({block.path.as_posix()})", ""]
            elif isinstance(block, Items):
                lines += [f"- `{code}`: {_md_cell(text)}" for code, text in block.items]
                lines += [""]
    return "\n".join(lines)


def write_report(out: Path, train_tokens: int | None = None, client=None) -> Path:
    """Write OUT/report.md, OUT/report.html and the PNGs under OUT/report/; return the .md.
    With a Dask `client`, the counts over documents are made on its workers."""
    from curation.report.html import render_html

    out = out_path(out)
    stage_totals(out)  # a clear error before anything is written
    sections = build_sections(out, train_tokens, client)
    spec = data.frozen_spec(out)
    title = f"Curation report: {spec.get('name') or resolved(out).name}"
    intro = (f"Output folder `{resolved(out)}`. Every removed or modified document has a row "
             "in `ledger/` with its stage and reason; rebuild this page with "
             f"`curate report {out}`.")
    path = out / "report.md"
    write_text_atomic(path, render_markdown(title, intro, sections))
    write_text_atomic(out / "report.html", render_html(title, intro, sections, out))
    return path
