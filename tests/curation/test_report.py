"""The curation report: its numbers against the ledger and manifests, its HTML in a browser."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from curation.pipeline import run_pipeline
from curation.quality.sampling import keep_decisions
from curation.report import stage_totals, write_report
from curation.report.data import blend_table, excerpt, pareto_keep_probability
from curation.spec import parse_spec
from tests.conftest import write_jsonl
from tests.curation.driver_guard import forbid_data_reads

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run_out(demo_run) -> Path:
    return demo_run


def md_table(md: str, title: str) -> pd.DataFrame:
    """The first pipe table after the line that starts with `title`, as strings."""
    lines = md.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith(title))
    first = next(k for k in range(start, len(lines)) if lines[k].startswith("|"))
    rows = []
    for line in lines[first:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return pd.DataFrame(rows[2:], columns=rows[0])


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%"))


def read_ledger(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "ledger").to_pandas()


def shard_tokens(out: Path) -> dict[str, tuple[int, int]]:
    """(documents, tokens) per source, counted from the Arrow shards themselves."""
    counts = {}
    for source_dir in sorted(p for p in (out / "tokens").iterdir() if p.is_dir()):
        docs = tokens = 0
        for shard in sorted(source_dir.glob("*.arrow")):
            table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
            docs += table.num_rows
            tokens += sum(len(c.values) for c in table.column("tokens").chunks)
        counts[source_dir.name] = (docs, tokens)
    return counts


def test_funnel_matches_the_ledger_and_curated_data(run_out):
    md = (run_out / "report.md").read_text()
    table = md_table(md, "**Documents**").set_index("source")
    ledger = read_ledger(run_out)
    removed = ledger[ledger["action"] == "removed"]
    curated = pq.read_table(run_out / "curated", columns=["source"]).to_pandas()
    stages = [name for name, _ in stage_totals(run_out)]
    assert list(table.columns) == ["input", *stages, "tokenized docs"]
    tokens = shard_tokens(run_out)
    for source in [*sorted(curated["source"].unique()), "(all)"]:
        mine = removed if source == "(all)" else removed[removed["source"] == source]
        left = len(curated) if source == "(all)" else int((curated["source"] == source).sum())
        # walking back from the curated data: before a stage = after it + what it removed
        expected = {}
        for stage in reversed(stages):
            expected[stage] = left
            left += int((mine["stage"] == stage).sum())
        expected["input"] = left
        expected["tokenized docs"] = sum(d for s, (d, _) in tokens.items()
                                         if source in ("(all)", s))
        got = {column: number(table.loc[source, column]) for column in expected}
        assert got == expected, source


def test_reason_counts_match_the_ledger(run_out):
    table = md_table((run_out / "report.md").read_text(), "| stage | action | reason")
    ledger = read_ledger(run_out)
    expected = ledger.groupby(["stage", "action", "reason"]).size().to_dict()
    got = {(r.stage, r.action, r.reason): int(number(r.documents)) for r in table.itertuples()}
    assert got == expected
    assert ("quality", "removed", "low_quality") in got


def test_examples_show_ledger_ids_with_their_text(run_out):
    md = (run_out / "report.md").read_text()
    ledger = read_ledger(run_out)
    language = ledger[ledger["stage"] == "language"].iloc[0]
    assert f"- `{language['id']}`:" in md
    before = pq.read_table(run_out / "stages" / "01_normalize" / "data").to_pandas()
    text = before.set_index("id").loc[language["id"], "text"]
    assert " ".join(text.split())[:60] in md


def test_every_example_shows_the_text_its_stage_received(run_out):
    """An id may be an example of several stages (normalized, then removed): each shows the
    text as that stage's input held it."""
    folders = sorted(p.name for p in (run_out / "stages").iterdir() if p.is_dir())
    inputs = {}
    for before, after in zip(folders, folders[1:], strict=False):
        frame = pq.read_table(run_out / "stages" / before / "data").to_pandas()
        inputs[after.split("_", 1)[1]] = dict(zip(frame["id"], frame["text"], strict=True))
    stage, checked = None, 0
    for line in (run_out / "report.md").read_text().splitlines():
        if match := re.fullmatch(r"\*(\w+) / \w+\*", line):
            stage = match.group(1)
        elif (match := re.match(r"- `([^`]+)`: .* — “(.*)”$", line)) and stage in inputs:
            shown = excerpt(inputs[stage][match.group(1)]).replace("|", "\\|")  # Markdown
            assert match.group(2) == shown, line
            checked += 1
    assert checked >= 10


def test_blend_table_tokens_weights_and_epochs(run_out):
    table = md_table((run_out / "report.md").read_text(), "The training blend")
    table = table[table["source"] != "total"].set_index("source")
    spec = yaml.safe_load((run_out / "spec.yaml").read_text())
    weights = {s["name"]: s["weight"] for s in spec["sources"]}
    tokens = {s: t for s, (_, t) in shard_tokens(run_out).items()}
    total = sum(tokens.values())
    for source, weight in weights.items():
        share = weight / sum(weights.values())
        assert number(table.loc[source, "tokens"]) == tokens.get(source, 0)
        assert number(table.loc[source, "weight"]) == pytest.approx(100 * share, abs=0.005)
        if tokens.get(source, 0) == 0:  # a source the curation emptied has no epochs
            assert table.loc[source, "epochs"] == "n/a"
        else:
            assert number(table.loc[source, "epochs"]) == pytest.approx(
                share * total / tokens[source], abs=0.005)


def _fake_tokens_out(root: Path, sources: list[dict], tokens: dict[str, int]) -> Path:
    (root / "spec.yaml").write_text(yaml.safe_dump({"name": "x", "sources": sources}))
    for name, count in tokens.items():
        (root / "tokens" / name).mkdir(parents=True)
        (root / "tokens" / name / "manifest.json").write_text(
            json.dumps({"documents": 1, "tokens": count}))
    return root


def test_blend_table_derives_weights_from_epochs(tmp_path):
    out = _fake_tokens_out(tmp_path, [{"name": "a", "epochs": 3.0}, {"name": "b", "epochs": 1.0}],
                           {"a": 100, "b": 300})
    blend = blend_table(out).set_index("source")
    assert blend.loc["a", "weight"] == pytest.approx(0.5)  # 3 x 100 of 600 seen tokens
    assert blend.loc["a", "epochs"] == pytest.approx(3.0)
    assert blend.loc["b", "epochs"] == pytest.approx(1.0)
    doubled = blend_table(out, train_tokens=1200).set_index("source")
    assert doubled.loc["a", "epochs"] == pytest.approx(6.0)


def test_pareto_keep_curve_is_the_sampling_rule():
    ids = [f"doc-{k}" for k in range(40_000)]
    for score in (0.2, 0.6, 0.95):
        keep, _ = keep_decisions(np.full(len(ids), score), ids, seed=3, alpha=9.0,
                                 threshold=None)
        assert keep.mean() == pytest.approx(pareto_keep_probability(score, 9.0), abs=0.01)


def test_quality_table_counts_every_scored_document(run_out):
    table = md_table((run_out / "report.md").read_text(), "| source | scored").set_index("source")
    quality = dict(stage_totals(run_out))["quality"]["by_source"]
    for source, counts in quality.items():
        assert number(table.loc[source, "scored"]) == counts["docs_in"]
        assert number(table.loc[source, "removed"]) == counts["removed"]


def test_html_is_self_contained_and_embeds_every_plot(run_out):
    page = (run_out / "report.html").read_text()
    pngs = sorted((run_out / "report").glob("*.png"))
    assert {p.stem for p in pngs} >= {"funnel", "reasons", "languages", "quality", "clusters",
                                      "contamination", "blend"}
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(pngs)
    for uri in sources:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert "<link" not in page and "<script" not in page and "url(" not in page


def test_sections_of_stages_that_did_not_run_are_left_out(tmp_path, dask_cluster_client):
    write_jsonl(tmp_path / "a" / "a.jsonl", [{"text": f"Document number {k} is here."}
                                             for k in range(6)] + ["{broken"])
    spec = parse_spec({"name": "small", "sources": [{"name": "a", "paths": ["a/*.jsonl"]}],
                       "stages": {"normalize": {}, "exact_dedup": {}}}, base_dir=tmp_path)
    out = tmp_path / "out"
    run_pipeline(spec, out, dask_cluster_client)
    md = write_report(out).read_text()
    assert "## Funnel" in md and "## Removal reasons" in md
    for title in ("Languages", "Quality", "Near-duplicate clusters", "Contamination", "Blend"):
        assert f"## {title}" not in md
    assert sorted(p.name for p in (out / "report").glob("*.png")) == ["funnel.png",
                                                                     "reasons.png"]


def test_report_of_a_folder_without_stages_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        write_report(tmp_path)
    assert not (tmp_path / "report.md").exists()


def find_or_install_chromium() -> str:
    """Debian's chromium; installed with apt-get when absent (root only), else a skip."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be: needs root and apt-get "
                    "(install Debian's `chromium` to run this test)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                        ["apt-get", "install", "-y", "chromium"]):
            result = subprocess.run(command, env=env, capture_output=True, text=True,
                                    timeout=600)
            if command[1] == "install" and result.returncode == 0:
                return shutil.which("chromium") or CHROMIUM
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get took over 10 minutes")
    pytest.skip(f"`apt-get install -y chromium` failed: {result.stderr.strip()[-300:]}")


def test_html_renders_with_its_plots_in_headless_chromium(run_out, tmp_path):
    chromium = find_or_install_chromium()
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,3000", (run_out / "report.html").resolve().as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    from matplotlib.image import imread

    pixels = (imread(shot)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 200, f"screenshot looks blank: {len(colours)} colours"
    # the funnel plot's line colours (matplotlib's tab:blue / orange / green) are on the page
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        near = np.abs(pixels.astype(int) - rgb).max(axis=1) <= 8
        assert near.sum() > 200, f"plot colour {rgb} not visible in the screenshot"


def test_quality_plot_draws_either_keep_rule(tmp_path):
    from curation.report.data import QualityScores
    from curation.report.plots import plot_quality

    per_source = pd.DataFrame({"source": ["w", "p"], "scored": [4, 1], "kept": [3, 1],
                               "removed": [1, 0], "exempt": [False, True], "mean": [0.5, 0.5]})
    histograms = {fate: np.histogram(scores, bins=np.linspace(0, 1, 41))[0]
                  for fate, scores in (("kept", [0.4, 0.7, 0.9]), ("removed", [0.1]),
                                       ("exempt", [0.5]))}
    for rule, threshold in (("pareto", None), ("threshold", 0.3)):
        path = plot_quality(QualityScores(per_source, histograms, rule, threshold, 9.0),
                            tmp_path / f"{rule}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_with_a_cluster_the_driver_reads_no_documents(run_out, tmp_path, dask_cluster_client,
                                                      monkeypatch):
    """Every count over documents is made on the workers and merged there: with every data
    reader refused in this process, the report is the one counted here file by file."""
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    alone = write_report(out).read_text()
    forbid_data_reads(monkeypatch)
    assert write_report(out, client=dask_cluster_client).read_text() == alone


def test_with_a_cluster_the_workers_draw_the_same_plots(run_out, tmp_path,
                                                        dask_cluster_client, monkeypatch):
    """The PNGs are drawn on the workers: matplotlib's savefig is refused in this process,
    and every plot comes out byte for byte as drawn here."""
    from matplotlib.figure import Figure

    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    write_report(out)
    here = {p.name: p.read_bytes() for p in sorted((out / "report").glob("*.png"))}
    for path in (out / "report").glob("*.png"):
        path.unlink()

    def refuse(*args, **kwargs):
        raise AssertionError("the driver drew a plot")

    monkeypatch.setattr(Figure, "savefig", refuse)
    write_report(out, client=dask_cluster_client)
    there = {p.name: p.read_bytes() for p in sorted((out / "report").glob("*.png"))}
    assert len(here) >= 4 and there == here


def test_the_text_bytes_table_ends_with_the_last_stage(run_out):
    table = md_table((run_out / "report.md").read_text(), "**Text bytes**")
    assert list(table.columns) == ["source", "input", *[n for n, _ in stage_totals(run_out)]]


def test_token_bars_have_their_sources_line_colour(run_out):
    from matplotlib.colors import to_hex

    from curation.report.data import funnel, token_totals
    from curation.report.plots import funnel_figure

    tokens = token_totals(run_out)
    axes = funnel_figure(funnel(run_out), tokens).axes
    line_colour = {line.get_label(): to_hex(line.get_color()) for line in axes[0].lines}
    bars = axes[2].patches
    names = [tick.get_text() for tick in axes[2].get_xticklabels()]
    assert sorted(names) == sorted(tokens) and len(set(line_colour.values())) == len(line_colour)
    assert {n: to_hex(bar.get_facecolor()) for n, bar in zip(names, bars, strict=True)} == \
        {n: line_colour[n] for n in names}
