"""Shared fixtures: a real Dask cluster on loopback, and small corpora written to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def dask_cluster_client():
    """A 2-worker LocalCluster of real processes, shared by the whole test session."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, dask_cluster_client) -> Path:
    """The demo spec run once per test session on a 10% demo corpus: curated data, ledger,
    report and token shards that the report, inspect and trainer tests read."""
    from curation.demo_corpus import build_demo_corpus
    from curation.pipeline import run_pipeline
    from curation.report import write_report
    from curation.spec import load_spec

    root = tmp_path_factory.mktemp("demo_run")
    build_demo_corpus(root / "demo_data", scale=0.1)
    _plant_contamination_in_an_exempt_source(root / "demo_data")
    (root / "corpus_specs").mkdir()
    (root / "corpus_specs" / "demo.yaml").write_text(
        (ROOT / "corpus_specs" / "demo.yaml").read_text())
    out = root / "out"
    run_pipeline(load_spec(root / "corpus_specs" / "demo.yaml"), out, dask_cluster_client)
    write_report(out)
    return out


def _plant_contamination_in_an_exempt_source(demo_data: Path) -> None:
    """At 10% the corpus has one or two contaminated web pages, and quality sampling may
    remove them; one more in the exempt docstrings source keeps decontamination in view."""
    import gzip

    task = json.loads((demo_data / "tasks" / "demo_qa.jsonl").read_text().splitlines()[0])
    passage = " ".join(task["context"].split()[:30])
    from pydoc_data.topics import topics

    from curation.demo.python_text import prose_paragraphs

    prose = prose_paragraphs(topics["assignment"]) + prose_paragraphs(topics["while"])
    record = {"text": "\n\n".join([*prose[:2], f"As the test set puts it, {passage}.",
                                     *prose[2:4]]), "module": "planted"}
    with gzip.open(demo_data / "docstrings" / "planted.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw str lines for malformed input) as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
