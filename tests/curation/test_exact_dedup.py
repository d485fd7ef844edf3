"""Exact dedup's duplicate finding by hash ranges: the same decisions however many range
tasks split the hash space, and every copy but the keeper removed."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from curation.stage_context import ClusterStageContext
from curation.stages import exact_dedup
from curation.stages.exact_dedup import ExactDedupStage
from tests.curation.test_fuzzy_dedup import make_spec, write_partitions


def run_stage(client, tmp, docs, n_parts):
    spec = make_spec({"web": 0, "books": 5})
    stage = ExactDedupStage({}, spec)
    paths = write_partitions(tmp / "input", docs, n_parts)
    ctx = ClusterStageContext(spec, tmp, tmp / "stage", paths, client)
    stage.prepare(ctx)
    ledgers = [stage.process(pd.read_parquet(p), k, ctx.workdir).ledger
               for k, p in enumerate(paths)]
    ledger = pd.concat(ledgers, ignore_index=True)
    return {i: json.loads(d) for i, d in zip(ledger["id"], ledger["detail"], strict=True)}


@pytest.mark.parametrize("keys_per_task", [7, 4_000_000])
def test_range_tasks_find_every_copy_and_the_same_keeper(dask_cluster_client, tmp_path,
                                                         monkeypatch, keys_per_task):
    monkeypatch.setattr(exact_dedup, "KEYS_PER_TASK", keys_per_task)
    docs = [(f"w{k:03d}", "web", f"text number {k % 13}") for k in range(60)]
    docs.append(("b999", "books", "text number 5"))  # higher priority: the keeper of its group
    decisions = run_stage(dask_cluster_client, tmp_path, docs, n_parts=4)
    assert len(decisions) == 61 - 13
    assert decisions["w005"] == {"keeper": "b999", "copies": 6}
    assert decisions["w013"] == {"keeper": "w000", "copies": 5}
    assert "w000" not in decisions and "b999" not in decisions
