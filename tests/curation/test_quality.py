"""The fastText quality classifier and GPT-3 Pareto sampling."""

from __future__ import annotations

import json
import random
from pydoc_data.topics import topics
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from curation.documents import LEDGER_COLUMNS
from curation.quality.model import train_quality_model
from curation.quality.sampling import keep_decisions, pareto_draws
from curation.stage_context import ClusterStageContext
from curation.stages.quality import QualityConfig, QualityStage, gather_training_texts
from tests.curation.driver_guard import received_bytes

SMALL_MODEL = {"dim": 16, "bucket": 50_000, "epoch": 25}


def prose(limit=500):
    """Paragraphs of the Python documentation: real, edited English prose."""
    paragraphs = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            words = para.split()
            if len(words) >= 25 and sum(w.isalpha() for w in words) > 0.7 * len(words):
                paragraphs.append(" ".join(words))
    return paragraphs[:limit]


SPAM = "buy cheap best price casino online free bonus viagra deal discount click win now".split()
BOILER = ["Home", "About us", "Contact", "Privacy policy", "Terms of use", "Login", "Sign up",
          "All rights reserved.", "We use cookies to improve your experience.", "Copyright",
          "Share on Facebook", "Subscribe to our newsletter", "Next page", "Sitemap"]


def junk(rng: random.Random, n: int) -> list[str]:
    """Keyword spam, navigation boilerplate and symbol soup, in turn."""
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(" ".join(rng.choices(SPAM, k=rng.randint(30, 80))))
        elif i % 3 == 1:
            out.append(" | ".join(rng.choices(BOILER, k=rng.randint(10, 30)))
                       + f" {rng.randint(1990, 2030)}")
        else:
            symbols = "#$%&*@!~^<>{}[]0123456789=+_"
            out.append(" ".join("".join(rng.choices(symbols, k=rng.randint(2, 9)))
                                for _ in range(rng.randint(20, 60))))
    return out


def test_classifier_separates_prose_from_junk_and_is_deterministic(tmp_path):
    good, bad = prose(400), junk(random.Random(0), 400)
    metrics = train_quality_model(good, bad, tmp_path / "a", seed=5, holdout=0.2, **SMALL_MODEL)
    assert metrics["accuracy"] >= 0.9
    assert metrics["auc"] >= 0.95 and metrics["precision"] >= 0.9 and metrics["recall"] >= 0.9
    assert metrics["counts"] == {"train_positive": 320, "train_negative": 320,
                                 "holdout_positive": 80, "holdout_negative": 80}
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["auc"] == metrics["auc"]
    train_quality_model(good, bad, tmp_path / "b", seed=5, holdout=0.2, **SMALL_MODEL)
    first = (tmp_path / "a" / "model.bin").read_bytes()
    assert first == (tmp_path / "b" / "model.bin").read_bytes()


def test_pareto_draws_follow_numpy_pareto_and_depend_on_id_only():
    ids = [f"doc-{i}" for i in range(40_000)]
    draws = pareto_draws(ids, seed=3, alpha=9.0)
    reference = np.random.default_rng(0).pareto(9.0, size=len(ids))
    for q in (0.1, 0.5, 0.9, 0.99):
        assert abs(np.quantile(draws, q) - np.quantile(reference, q)) < 0.01 + 0.05 * q
    assert np.array_equal(pareto_draws(ids[::-1], 3, 9.0), draws[::-1])
    assert not np.array_equal(pareto_draws(ids, 4, 9.0), draws)
    keep, _ = keep_decisions(np.full(len(ids), 0.5), ids, 3, 9.0, None)
    assert abs(keep.mean() - (1.5 ** -9.0)) < 0.01  # P(pareto > 0.5) = 1.5^-alpha
    keep, draws = keep_decisions(np.array([0.2, 0.7]), ["a", "b"], 3, 9.0, 0.5)
    assert keep.tolist() == [False, True] and draws is None


def test_config_allows_exactly_one_rule():
    with pytest.raises(ValueError, match="not both"):
        QualityConfig(positive=["a"], negative=["b"], alpha=9, threshold=0.5)
    assert QualityConfig(positive=["a"], negative=["b"], threshold=0.5).rule == "threshold(0.5)"
    assert QualityConfig(positive=["a"], negative=["b"]).rule == "pareto(alpha=9)"
    with pytest.raises(ValueError, match="both positive and negative"):
        QualityConfig(positive=["a"], negative=["a"])


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def corpus() -> pd.DataFrame:
    rng = random.Random(1)
    good = prose(300)
    bad = junk(rng, 300)
    rows = [(f"pydocs/{i}", "pydocs", t) for i, t in enumerate(good[:240])]
    rows += [(f"web/{i}", "web", t) for i, t in enumerate(bad[:240])]
    rows += [(f"books/{i}", "books", t) for i, t in enumerate(bad[240:])]  # junk, but exempt
    rows += [(f"other/{i}", "other", t) for i, t in enumerate(good[240:] + bad[240:])]
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=["id", "source", "text"]).assign(meta="{}")


def partitions(tmp_path, docs, n, name):
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(len(docs)), n)):
        path = tmp_path / name / f"part-{i}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        docs.iloc[chunk].to_parquet(path)
        paths.append(path)
    return paths


def run(stage, spec, tmp_path, client, paths, name):
    workdir = tmp_path / "stages" / name
    stage.prepare(ClusterStageContext(spec, tmp_path, workdir, paths, client))
    outs = [stage.process(pd.read_parquet(p), i, workdir) for i, p in enumerate(paths)]
    return (pd.concat([o.kept for o in outs], ignore_index=True),
            pd.concat([o.ledger for o in outs], ignore_index=True))


def test_stage_trains_reuses_scores_and_samples(tmp_path, client, capsys):
    docs = corpus()
    spec = SimpleNamespace(name="t", seed=1234, base_dir=tmp_path, sources=[])
    config = QualityConfig(positive=["pydocs"], negative=["web"], exempt=["books"],
                           max_docs_per_class=200, **SMALL_MODEL)
    stage = QualityStage(config, spec)
    kept3, ledger3 = run(stage, spec, tmp_path, client, partitions(tmp_path, docs, 3, "p3"), "q3")
    metrics = json.loads((tmp_path / "quality" / "metrics.json").read_text())
    assert metrics["counts"]["train_positive"] + metrics["counts"]["holdout_positive"] == 200
    assert metrics["accuracy"] >= 0.9 and "AUC" in capsys.readouterr().out
    model_mtime = (tmp_path / "quality" / "model.bin").stat().st_mtime_ns

    # a different partitioning: the model is reused and every decision is the same
    kept1, ledger1 = run(stage, spec, tmp_path, client, partitions(tmp_path, docs, 1, "p1"), "q1")
    assert (tmp_path / "quality" / "model.bin").stat().st_mtime_ns == model_mtime
    assert sorted(kept1["id"]) == sorted(kept3["id"])
    assert sorted(ledger1["id"]) == sorted(ledger3["id"])
    scores = kept3.set_index("id")["quality_score"]
    assert np.allclose(kept1.set_index("id")["quality_score"].loc[scores.index], scores)

    assert list(ledger3.columns) == LEDGER_COLUMNS
    assert len(kept3) + len(ledger3) == len(docs)
    assert set(ledger3["reason"]) == {"low_quality"}
    assert not set(ledger3["source"]) & {"books"}  # exempt: scored, never removed
    books = kept3[kept3["source"] == "books"]
    assert len(books) == 60 and books["quality_score"].mean() < 0.2
    web_removed = (ledger3["source"] == "web").sum()
    assert web_removed > 0.8 * 240  # junk mostly goes (score ~0: kept w.p. 2^-9)
    assert kept3.loc[kept3["source"] == "pydocs", "quality_score"].mean() > 0.9
    # every decision is the Pareto rule on the seeded per-id draw
    sampled = kept3[kept3["source"] != "books"]
    draws = pareto_draws(sampled["id"].tolist(), 1234, 9.0)
    assert (draws > 1 - sampled["quality_score"].to_numpy()).all()
    # and the number kept is what the rule predicts: P(keep) = (2 - score)^-alpha
    removed_scores = [json.loads(d)["score"] for d in ledger3["detail"]]
    p_keep = (2.0 - np.concatenate([sampled["quality_score"], removed_scores])) ** -9.0
    spread = 4 * np.sqrt((p_keep * (1 - p_keep)).sum()) + 1
    assert abs(len(sampled) - p_keep.sum()) < spread
    detail = json.loads(ledger3["detail"].iloc[0])
    assert detail["rule"] == "pareto(alpha=9)" and 0 <= detail["score"] <= 1
    assert detail["draw"] <= 1 - detail["score"]


def test_stage_threshold_rule_with_given_model(tmp_path, client):
    docs = corpus()
    train_quality_model(prose(200), junk(random.Random(2), 200), tmp_path / "m", seed=1,
                        **SMALL_MODEL)
    spec = SimpleNamespace(name="t", seed=1, base_dir=tmp_path, sources=[])
    config = QualityConfig(positive=["pydocs"], negative=["web"], threshold=0.5,
                           model="m/model.bin")
    kept, ledger = run(QualityStage(config, spec), spec, tmp_path, client,
                       partitions(tmp_path, docs, 2, "p2"), "qt")
    assert not (tmp_path / "quality").exists()  # nothing trained: the given model is used
    assert (kept["quality_score"] >= 0.5).all()
    assert all(json.loads(d)["score"] < 0.5 for d in ledger["detail"])
    with pytest.raises(FileNotFoundError, match="no fastText model"):
        QualityStage(config.model_copy(update={"model": "missing.bin"}), spec).params()


def test_training_sample_is_balanced_unless_asked_otherwise(tmp_path, client):
    docs = corpus()
    docs = docs[~((docs["source"] == "pydocs") & (docs.index % 3 != 0))]  # ~80 vs 240
    spec = SimpleNamespace(name="t", seed=1234, base_dir=tmp_path, sources=[])
    ctx = ClusterStageContext(spec, tmp_path, tmp_path / "w",
                              partitions(tmp_path, docs, 2, "bal"), client)
    n_pos = int((docs["source"] == "pydocs").sum())
    for balance, expected_neg in ((True, n_pos), (False, 240)):
        config = QualityConfig(positive=["pydocs"], negative=["web"], balance=balance,
                               **SMALL_MODEL)
        positive, negative = gather_training_texts(ctx, config, 1234)
        assert (len(positive), len(negative)) == (n_pos, expected_neg)
    # the balanced sample is the unbalanced one cut to size, so it does not depend on order
    assert set(negative[:n_pos]) == set(gather_training_texts(
        ctx, QualityConfig(positive=["pydocs"], negative=["web"], **SMALL_MODEL), 1234)[1])


def test_the_driver_receives_the_training_sample_not_a_hash_per_document(tmp_path, client,
                                                                          monkeypatch):
    """The bottom-k sample is merged on the workers: what this process receives is the same
    for 2 partitions as for 40, and so is the sample."""
    docs, spec = corpus(), SimpleNamespace(name="t", seed=1234, base_dir=tmp_path, sources=[])
    config = QualityConfig(positive=["pydocs"], negative=["web"], max_docs_per_class=3,
                           **SMALL_MODEL)
    samples, received = {}, {}
    for n in (2, 40):
        ctx = ClusterStageContext(spec, tmp_path, tmp_path / f"w{n}",
                                  partitions(tmp_path, docs, n, f"n{n}"), client)
        sizes = received_bytes(monkeypatch)
        samples[n] = gather_training_texts(ctx, config, 1234)
        monkeypatch.undo()
        received[n] = sum(sizes)
    assert samples[2] == samples[40] and [len(s) for s in samples[2]] == [3, 3]
    assert received[40] <= 1.05 * received[2]


def test_a_classifier_that_cannot_tell_the_classes_apart_is_warned_about(tmp_path, client,
                                                                         capsys):
    from curation.stages.quality import ensure_quality_model

    same = prose(200)  # the same texts in both classes
    docs = pd.DataFrame([(f"{source}/{i}", source, text) for source in ("pydocs", "web")
                         for i, text in enumerate(same)],
                        columns=["id", "source", "text"]).assign(meta="{}")
    spec = SimpleNamespace(name="t", seed=1234, base_dir=tmp_path, sources=[])
    config = QualityConfig(positive=["pydocs"], negative=["web"], holdout=0.3, **SMALL_MODEL)
    ctx = ClusterStageContext(spec, tmp_path, tmp_path / "w",
                              partitions(tmp_path, docs, 2, "same"), client)
    metrics = ensure_quality_model(ctx, config, 1234)
    assert metrics["auc"] < 0.6
    assert (f"quality: warning: the classifier's held-out AUC is {metrics['auc']:.3f} "
            "(under 0.6)") in capsys.readouterr().err


def test_the_demo_classifier_learns_and_removes_the_web_filler(demo_run, capsys):
    metrics = json.loads((demo_run / "quality" / "metrics.json").read_text())
    assert metrics["auc"] >= 0.6 and metrics["precision"] > 0 and metrics["recall"] > 0
    plan = json.loads((demo_run.parent / "demo_data" / "demo_corpus.json").read_text())
    filler = {entry["id"] for entry in plan["web_plan"]["filler"]}
    import pyarrow.parquet as pq

    ledger = pq.read_table(demo_run / "ledger").to_pandas()
    removed = ledger[ledger["id"].isin(filler) & (ledger["action"] == "removed")]
    curated = set(pq.read_table(demo_run / "curated", columns=["id"]).column("id").to_pylist())
    assert filler and not filler & curated
    # no rule before the classifier catches them: the quality stage is what removes them
    assert set(removed["stage"]) == {"quality"} and set(removed["id"]) == filler
    report = (demo_run / "report.md").read_text()
    assert (f"**Classifier**: held-out AUC {metrics['auc']:.3f}, precision "
            f"{metrics['precision']:.3f}, recall {metrics['recall']:.3f}") in report
    assert "**Warning**" not in report


def test_model_is_retrained_when_its_training_data_change(tmp_path, client):
    """Same parameters, same ids, different texts: a different model, not the cached one."""
    docs = corpus()
    spec = SimpleNamespace(name="t", seed=1234, base_dir=tmp_path, sources=[])
    config = QualityConfig(positive=["pydocs"], negative=["web"], max_docs_per_class=200,
                           **SMALL_MODEL)
    stage = QualityStage(config, spec)
    model = tmp_path / "quality" / "model.bin"
    run(stage, spec, tmp_path, client, partitions(tmp_path, docs, 2, "before"), "q")
    first = model.stat().st_mtime_ns, json.loads(model.with_name("metrics.json").read_text())
    run(stage, spec, tmp_path, client, partitions(tmp_path, docs, 3, "again"), "q")
    assert model.stat().st_mtime_ns == first[0]  # same sample: reused

    edited = docs.copy()
    positive = edited["source"] == "pydocs"
    edited.loc[positive, "text"] = edited.loc[positive, "text"] + " Revised edition."
    run(stage, spec, tmp_path, client, partitions(tmp_path, edited, 2, "after"), "q")
    metrics = json.loads(model.with_name("metrics.json").read_text())
    assert model.stat().st_mtime_ns != first[0]
    assert metrics["params"] == first[1]["params"]
    assert metrics["params_hash"] != first[1]["params_hash"]
