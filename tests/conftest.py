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


def write_jsonl(path: Path, records: list) -> Path:
    """Write records (dicts, or raw str lines for malformed input) as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
