"""The report's PNG plots, drawn with matplotlib's object API (the Agg renderer, no pyplot).

`Figure` objects are used directly rather than pyplot so that plotting keeps no global
state and works in a worker, a test or a notebook alike, whatever backend is configured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from curation.atomic import atomic_path
from curation.report.data import QualityScores, pareto_keep_probability

DPI = 100


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    return path


def plot_funnel(funnel: pd.DataFrame, tokens: dict[str, dict], path: Path) -> Path:
    """Documents and text bytes left after every stage, one line per source; tokens at the end."""
    return _save(funnel_figure(funnel, tokens), path)


def funnel_figure(funnel: pd.DataFrame, tokens: dict[str, dict]) -> Figure:
    """The funnel plot; a source has one colour in every panel."""
    stages = list(dict.fromkeys(funnel["stage"]))
    sources = sorted(funnel["source"].unique())
    colour = {source: f"C{k % 10}" for k, source in enumerate(sources)}
    panels = 3 if tokens else 2
    fig = Figure(figsize=(4.2 * panels, 4.0))
    axes = fig.subplots(1, panels)
    positions = np.arange(len(stages) + 1)
    labels = ["input", *stages]
    for column_in, column_out, ax, title in (("docs_in", "kept", axes[0], "documents"),
                                             ("bytes_in", "bytes_out", axes[1], "text MB")):
        scale = 1e6 if column_in == "bytes_in" else 1
        for source in sources:
            rows = funnel[funnel["source"] == source].set_index("stage")
            values = [rows[column_in].iloc[0]] + [rows[column_out].get(s, np.nan) for s in stages]
            ax.plot(positions, np.asarray(values, dtype=float) / scale, marker="o", label=source,
                    color=colour[source])
        ax.set_xticks(positions, labels, rotation=40, ha="right", fontsize=8)
        ax.set_title(f"{title} after each stage")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if tokens:
        names = sorted(tokens)
        axes[2].bar(names, [tokens[n]["tokens"] / 1e3 for n in names],
                    color=[colour.get(n, "grey") for n in names])
        axes[2].set_title("tokens in the shards (thousands)")
        axes[2].tick_params(axis="x", rotation=40, labelsize=8)
        axes[2].grid(axis="y", alpha=0.3)
    return fig


def plot_reasons(counts: pd.DataFrame, path: Path) -> Path:
    """Removed documents per (stage, reason), one colour per stage."""
    removed = counts[counts["action"] == "removed"].iloc[::-1]
    fig = Figure(figsize=(9, 0.9 + 0.28 * max(len(removed), 1)))
    ax = fig.subplots()
    stages = list(dict.fromkeys(counts["stage"]))
    colours = {s: f"C{k % 10}" for k, s in enumerate(stages)}
    labels = [f"{s}: {r}" for s, r in zip(removed["stage"], removed["reason"], strict=True)]
    ax.barh(labels, removed["documents"], color=[colours[s] for s in removed["stage"]])
    for y, value in enumerate(removed["documents"]):
        ax.text(value, y, f" {value:,}", va="center", fontsize=7)
    ax.set_xlabel("documents removed")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("removal reasons")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_languages(table: pd.DataFrame, path: Path, top: int = 25) -> Path:
    """Curated documents and language-stage removals per detected language."""
    table = table.head(top)
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    x = np.arange(len(table))
    ax.bar(x, table["curated"], label="curated", color="tab:blue")
    ax.bar(x, table["removed"], bottom=table["curated"], label="removed by `language`",
           color="tab:red")
    ax.set_xticks(x, table["lang"])
    ax.set_yscale("symlog")
    ax.set_ylabel("documents (symlog)")
    ax.set_title("detected language")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_quality(quality: QualityScores, path: Path) -> Path:
    """Score histogram by fate, with the keep rule (threshold line or Pareto P(keep))."""
    edges = np.linspace(0, 1, len(quality.histograms["kept"]) + 1)
    groups = [("kept", "kept", "tab:blue"), ("removed", "removed", "tab:red"),
              ("exempt", "exempt (scored only)", "tab:gray")]
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    ax.hist([edges[:-1]] * len(groups), bins=edges, stacked=True,
            weights=[quality.histograms[fate] for fate, _, _ in groups],
            label=[label for _, label, _ in groups], color=[c for _, _, c in groups])
    ax.set_xlabel("quality score (classifier P(high quality))")
    ax.set_ylabel("documents")
    if quality.rule == "threshold":
        ax.axvline(quality.threshold, color="black", linestyle="--",
                   label=f"keep rule: score ≥ {quality.threshold:g}")
        handles, labels = ax.get_legend_handles_labels()
    else:
        rule = ax.twinx()
        grid = np.linspace(0, 1, 201)
        rule.plot(grid, pareto_keep_probability(grid, quality.alpha), color="black",
                  label=f"P(keep) = (2 - s)^-{quality.alpha:g} (Pareto)")
        rule.set_ylim(0, 1.05)
        rule.set_ylabel("P(keep)")
        handles, labels = (a + b for a, b in zip(ax.get_legend_handles_labels(),
                                                 rule.get_legend_handles_labels(), strict=True))
    ax.legend(handles, labels, fontsize=8, loc="upper left")
    ax.set_title("quality scores and the keep rule")
    return _save(fig, path)


def plot_cluster_sizes(sizes: pd.Series, path: Path) -> Path:
    """How many near-duplicate clusters have each size (`sizes`: clusters per size)."""
    values, counts = sizes.index.to_numpy(), sizes.to_numpy()
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.bar(values.astype(str), counts, color="tab:purple")
    ax.set_xlabel("cluster size (documents, keeper included)")
    ax.set_ylabel("clusters")
    ax.set_title("near-duplicate clusters")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_contamination(tasks: dict, path: Path) -> Path:
    """Documents cut (modified) and dropped per downstream task."""
    names = sorted(tasks)
    x = np.arange(len(names))
    modified = [tasks[n]["documents_modified"] for n in names]
    dropped = [tasks[n]["documents_dropped"] for n in names]
    fig = Figure(figsize=(max(5, 1.2 * len(names) + 3), 3.5))
    ax = fig.subplots()
    ax.bar(x - 0.2, modified, width=0.4, label="cut (modified)", color="tab:orange")
    ax.bar(x + 0.2, dropped, width=0.4, label="dropped", color="tab:red")
    ax.set_xticks(x, names)
    ax.set_ylabel("documents")
    ax.set_title("contamination per task")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_blend(blend: pd.DataFrame, path: Path) -> Path:
    """Share of the corpus vs share of the blend: what the weights up- and down-sample."""
    x = np.arange(len(blend))
    share = blend["tokens"] / max(int(blend["tokens"].sum()), 1)
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.bar(x - 0.2, 100 * share, width=0.4, label="% of curated tokens", color="tab:green")
    ax.bar(x + 0.2, 100 * blend["weight"], width=0.4, label="blend weight %", color="tab:blue")
    ax.set_xticks(x, blend["source"])
    ax.set_ylabel("%")
    ax.set_title("corpus share vs blend weight")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
