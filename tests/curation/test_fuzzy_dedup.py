"""The fuzzy dedup stage on a real Dask cluster, on planted near-duplicates of real text."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from curation.documents import DOCUMENT_COLUMNS
from curation.stage_context import ClusterStageContext
from curation.stages.fuzzy_dedup import DONE_MARKER, FuzzyDedupConfig, FuzzyDedupStage
from tests.curation.driver_guard import received_bytes

dask_distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client(dask_cluster_client):
    """The session's 2-worker LocalCluster of real processes (tests/conftest.py)."""
    return dask_cluster_client


def make_spec(priorities: dict[str, int], seed: int = 1234):
    sources = [types.SimpleNamespace(name=n, priority=p) for n, p in priorities.items()]
    by_name = {s.name: s for s in sources}
    return types.SimpleNamespace(name="test", seed=seed, sources=sources,
                                 source=by_name.__getitem__)


def words_of(text: str) -> list[str]:
    """The test's own reading of the stage's normalisation: lower case, words of \\w chars."""
    return "".join(c if c.isalnum() or c == "_" else " " for c in text.lower()).split()


def shingle_set(text: str, n: int = 5) -> set:
    w = words_of(text)
    return set(zip(*[w[i:] for i in range(n)], strict=False)) if len(w) >= n else {tuple(w)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def base_texts(count: int, rng: np.random.Generator) -> list[str]:
    """Distinct passages of Python's own documentation, 80 to 300 words each."""
    from pydoc_data.topics import topics

    words = " ".join(topics[k] for k in sorted(topics)).split()
    texts, start = [], 0
    for _ in range(count):
        length = int(rng.integers(80, 300))
        texts.append(" ".join(words[start:start + length]))
        start += length + 50
    assert start < len(words), "not enough documentation text"
    return texts


def edited(text: str, target: float, rng: np.random.Generator) -> str:
    """A copy with random words replaced so its shingle Jaccard lands near `target`."""
    words = text.split()
    shingles = max(len(words) - 4, 1)
    edits = max(1, round(shingles * (1 - target) / (5 * (1 + target))))
    for i in rng.choice(len(words), size=min(edits, len(words)), replace=False):
        words[i] = f"zq{rng.integers(1 << 40):x}"
    return " ".join(words)


def planted_corpus(seed: int = 7):
    """Documents, and planted (original, copy, true Jaccard) pairs with J spread over [0.6, 1]."""
    rng = np.random.default_rng(seed)
    bases = base_texts(240, rng)
    docs, pairs = [], []
    for i, text in enumerate(bases):
        docs.append((f"doc-{i:04d}-a", text))
        if i < 200:
            copy = edited(text, float(rng.uniform(0.6, 1.0)), rng)
            docs.append((f"doc-{i:04d}-b", copy))
            pairs.append((f"doc-{i:04d}-a", f"doc-{i:04d}-b",
                          jaccard(shingle_set(text), shingle_set(copy))))
    return docs, pairs


def write_partitions(folder: Path, docs: list[tuple[str, str, str]], n_parts: int) -> list[Path]:
    """(id, source, text) documents split into n_parts parquet partitions, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(docs, columns=["id", "source", "text"]).assign(meta="{}")
    paths = []
    for k, chunk in enumerate(np.array_split(np.arange(len(frame)), n_parts)):
        path = folder / f"part-{k:05d}.parquet"
        frame.iloc[chunk][DOCUMENT_COLUMNS].to_parquet(path, index=False)
        paths.append(path)
    return paths


def run_stage(client, tmp: Path, docs, n_parts=3, config=None, priorities=None):
    """prepare + process every partition; returns (stage, kept ids, ledger, workdir)."""
    spec = make_spec(priorities or {"pydocs": 0})
    stage = FuzzyDedupStage(config or FuzzyDedupConfig(), spec)
    paths = write_partitions(tmp / "input", docs, n_parts)
    ctx = ClusterStageContext(spec, tmp, tmp / "stage", paths, client)
    stage.prepare(ctx)
    kept, ledgers = [], []
    for k, path in enumerate(paths):
        part = pd.read_parquet(path)
        out = stage.process(part, k, ctx.workdir)
        assert len(out.kept) + len(out.ledger) == len(part)
        assert not set(out.kept["id"]) & set(out.ledger["id"])
        kept += list(out.kept["id"])
        ledgers.append(out.ledger)
    return stage, set(kept), pd.concat(ledgers, ignore_index=True), ctx.workdir


def merged_pairs(ledger: pd.DataFrame) -> set[frozenset]:
    """Every (removed, keeper) pair, which says the two ended up in one cluster."""
    keepers = [json.loads(d)["keeper"] for d in ledger["detail"]]
    return {frozenset(p) for p in zip(ledger["id"], keepers, strict=True)}


def datasketch_recall(docs, pairs) -> dict[tuple, bool]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    hashes = {}
    for doc_id, text in docs:
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([" ".join(s).encode() for s in shingle_set(text)])
        hashes[doc_id] = m
        lsh.insert(doc_id, m)
    return {(a, b): b in lsh.query(hashes[a]) for a, b, _ in pairs}


def test_planted_near_duplicates_recall_precision_and_datasketch(client, tmp_path):
    docs, pairs = planted_corpus()
    _, kept, ledger, _ = run_stage(client, tmp_path, [(i, "pydocs", t) for i, t in docs])
    assert (ledger["reason"] == "near_duplicate").all()
    found = merged_pairs(ledger)
    truth = np.array([j for _, _, j in pairs])
    hit = np.array([frozenset((a, b)) in found for a, b, _ in pairs])
    high, mid = truth >= 0.9, (truth >= 0.8) & (truth < 0.9)
    assert high.sum() >= 40 and mid.sum() >= 30, "the planted corpus lost its spread"
    assert hit[high].mean() >= 0.95
    assert hit[mid].mean() >= 0.90
    assert not hit[truth < 0.7].any()
    # No removed document is far from everything: its best true Jaccard is >= 0.7.
    sets = {i: shingle_set(t) for i, t in docs}
    for removed in ledger["id"]:
        best = max(jaccard(sets[removed], s) for i, s in sets.items() if i != removed)
        assert best >= 0.7, (removed, best)
    # datasketch's MinHashLSH at the same threshold and num_perm as a reference.
    theirs = datasketch_recall(docs, pairs)
    at_threshold = truth >= 0.8
    their_hit = np.array([theirs[(a, b)] for a, b, _ in pairs])
    assert hit[at_threshold].mean() >= their_hit[at_threshold].mean()
    assert len(kept) + len(ledger) == len(docs)


def test_transitive_cluster_collapses_to_one_keeper(client, tmp_path):
    rng = np.random.default_rng(3)
    base = base_texts(5, rng)
    a = base[0] + " " + base[1]
    words = a.split()
    # B changes one word in every 72 of A; C also changes the word between each of them:
    # A~B and B~C near J = 0.87, while A and C stay near 0.76.
    b_words, c_words = list(words), list(words)
    for i in range(0, len(words) - 36, 72):
        b_words[i] = c_words[i] = f"bq{i}"
        c_words[i + 36] = f"cq{i}"
    b, c = " ".join(b_words), " ".join(c_words)
    sa, sb, sc = shingle_set(a), shingle_set(b), shingle_set(c)
    assert jaccard(sa, sb) >= 0.8 and jaccard(sb, sc) >= 0.8 and jaccard(sa, sc) < 0.8
    docs = [("t-a", "pydocs", a), ("t-b", "pydocs", b), ("t-c", "pydocs", c)]
    docs += [(f"other-{k}", "pydocs", t) for k, t in enumerate(base[2:])]
    _, kept, ledger, _ = run_stage(client, tmp_path, docs, n_parts=2)
    assert {"t-a", "t-b", "t-c"} - kept == set(ledger["id"])
    assert len(ledger) == 2
    details = [json.loads(d) for d in ledger["detail"]]
    assert {d["keeper"] for d in details} == {"t-a"}
    assert {d["cluster_size"] for d in details} == {3}
    assert len({d["component"] for d in details}) == 1


def test_source_priority_decides_the_keeper(client, tmp_path):
    rng = np.random.default_rng(5)
    base = base_texts(3, rng)
    copy = edited(base[0], 0.95, rng)
    docs = [("a-web", "web", base[0]), ("z-books", "books", copy),
            ("b-web", "web", base[1]), ("c-web", "web", base[2])]
    # verify off: the LSH candidate edges alone form the clusters.
    _, kept, ledger, _ = run_stage(client, tmp_path, docs, n_parts=2,
                                   config=FuzzyDedupConfig(verify=False),
                                   priorities={"web": 0, "books": 10})
    assert "z-books" in kept and list(ledger["id"]) == ["a-web"]
    assert json.loads(ledger["detail"][0])["keeper"] == "z-books"


def decisions_by_id(ledger: pd.DataFrame) -> dict:
    return {i: json.loads(d) for i, d in zip(ledger["id"], ledger["detail"], strict=True)}


def test_same_decisions_across_workers_and_partitionings(client, tmp_path):
    docs, _ = planted_corpus(seed=11)
    docs = [(i, "pydocs", t) for i, t in docs[:150]]
    _, _, reference, _ = run_stage(client, tmp_path / "two-workers-3", docs, n_parts=3)
    _, _, repartitioned, _ = run_stage(client, tmp_path / "two-workers-5", docs[::-1], n_parts=5)
    with dask_distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=None) as cluster, \
            dask_distributed.Client(cluster) as one:
        _, _, single, _ = run_stage(one, tmp_path / "one-worker", docs, n_parts=2)
    expected = decisions_by_id(reference)
    assert len(expected) >= 10
    for other in (repartitioned, single):
        assert decisions_by_id(other) == expected


@pytest.mark.parametrize("budget_mb", [0.0, 0.02])
def test_budgeted_verification_tasks_decide_as_one_bin(client, tmp_path, budget_mb):
    """A tiny budget cuts the pairs and their shingle sets into many verification tasks
    (0.02 MB: a few documents' sets per bin, components and keepers in one task; 0 MB:
    one document per bin and pair group, components and keepers by Dask joins). Both
    decide exactly as the default budget's one bin and one task per worker."""
    docs, _ = planted_corpus(seed=17)
    docs = [(i, "pydocs", t) for i, t in docs[:120]]
    _, _, one_task, workdir = run_stage(client, tmp_path / "one", docs, n_parts=3)
    done = json.loads((workdir / DONE_MARKER).read_text())
    assert (done["bins"], done["pair_groups"]) == (1, 1)
    assert done["verify_tasks"] == 2  # one per worker
    assert done["components"] == "one_task"
    config = FuzzyDedupConfig(memory_budget_mb=budget_mb)
    _, _, budgeted, workdir = run_stage(client, tmp_path / "budgeted", docs, n_parts=4,
                                        config=config)
    done = json.loads((workdir / DONE_MARKER).read_text())
    assert done["verify_tasks"] >= 10 and done["bins"] >= 10
    if budget_mb == 0.0:
        assert done["pair_groups"] == 4 and done["components"] == "dask_joins"
    else:
        assert done["components"] == "one_task"
    assert len(one_task) >= 5
    assert decisions_by_id(budgeted) == decisions_by_id(one_task)


def test_routing_sends_every_pair_to_one_task_within_its_share():
    from curation.dedup.routing import bin_of, part_groups, route_pairs, runs_within

    assert runs_within([3, 3, 5, 9, 1, 1], 6) == [0, 2, 3, 4]
    assert part_groups(np.array([2, 0, 5, 0, 0, 1]), 4) == [(0, 2), (2, 3), (3, 6)]
    rng = np.random.default_rng(0)
    lo = rng.integers(0, 1000, 500)
    hi = lo + rng.integers(1, 200, 500)
    bin_keys = np.array([0, 100, 350, 900])
    routed = route_pairs(lo, hi, bin_keys, max_pairs=7)
    got = sorted((int(a), int(b)) for x, y in routed.values() for a, b in zip(x, y, strict=True))
    assert got == sorted(zip(lo.tolist(), hi.tolist(), strict=True))
    for (i, j, _), (x, y) in routed.items():
        assert len(x) <= 7 and (bin_of(x, bin_keys) == i).all() and (bin_of(y, bin_keys) == j).all()


def test_rerun_reuses_finished_signatures(client, tmp_path):
    docs, _ = planted_corpus(seed=13)
    docs = [(i, "pydocs", t) for i, t in docs[:60]]
    _, _, first, workdir = run_stage(client, tmp_path, docs, n_parts=3)
    signature_files = sorted(workdir.glob("signatures-*/part-*.parquet"))
    assert len(signature_files) == 3
    stamps = {p: p.stat().st_mtime_ns for p in signature_files}
    (workdir / DONE_MARKER).unlink()
    signature_files[1].unlink()  # as if the run was cut off before this partition finished
    _, _, second, _ = run_stage(client, tmp_path, docs, n_parts=3)
    assert signature_files[1].exists()
    for p in (signature_files[0], signature_files[2]):
        assert p.stat().st_mtime_ns == stamps[p]
    assert decisions_by_id(second) == decisions_by_id(first)


def test_config_rejects_half_given_bands():
    with pytest.raises(ValueError, match="both"):
        FuzzyDedupConfig(bands=8)
    with pytest.raises(ValueError, match="num_perm"):
        FuzzyDedupConfig(bands=20, rows=10, num_perm=128)
    assert FuzzyDedupConfig(shingle="char").ngram_size == 24


def test_unknown_source_is_named(client, tmp_path):
    text = base_texts(1, np.random.default_rng(1))[0]
    docs = [("x1", "pydocs", text), ("x2", "mystery", text)]
    with pytest.raises(Exception, match="mystery"):
        run_stage(client, tmp_path, docs, n_parts=1)



def union_find_labels(edges: pd.DataFrame) -> dict[int, int]:
    parent: dict[int, int] = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            x = parent[x]
        return x

    for lo, hi in zip(edges["lo"], edges["hi"], strict=True):
        a, b = root(lo), root(hi)
        parent[max(a, b)] = min(a, b)
    return {x: root(x) for x in parent}


@pytest.mark.parametrize("budget", [0, 1 << 30])
def test_components_in_memory_and_by_propagation_match_union_find(client, budget):
    import dask.dataframe as dd

    from curation.dedup.components import connected_component_labels

    rng = np.random.default_rng(9)
    chain = np.arange(100, 124)  # a long path: the worst case for label propagation
    random_lo = rng.integers(0, 90, 60)
    edges = pd.DataFrame({"lo": np.concatenate([chain[:-1], random_lo]),
                          "hi": np.concatenate([chain[1:], random_lo + rng.integers(1, 9, 60)])})
    edges = edges.sample(frac=1.0, random_state=2).astype("int64")
    labels = connected_component_labels(dd.from_pandas(edges, npartitions=3), budget)
    got = dict(zip(*labels.compute()[["doc", "label"]].to_numpy().T, strict=True))
    assert got == union_find_labels(edges)
    assert got[123] == 100


def test_distinct_documents_and_an_empty_partition_are_all_kept(client, tmp_path):
    texts = base_texts(3, np.random.default_rng(4))
    docs = [(f"u{k}", "pydocs", t) for k, t in enumerate(texts)]
    _, kept, ledger, _ = run_stage(client, tmp_path, docs, n_parts=4)  # one partition empty
    assert kept == {"u0", "u1", "u2"} and ledger.empty


def test_edges_within_the_budget_are_labelled_on_a_worker(client, monkeypatch):
    """The in-memory path gathers the edges into a worker, not into this process: what
    this process receives is the edge count, not the edges."""
    import dask.dataframe as dd

    from curation.dedup.components import connected_component_labels

    edges = pd.DataFrame({"lo": np.arange(0, 4000, 2), "hi": np.arange(1, 4001, 2)})
    sizes = received_bytes(monkeypatch)
    labels = connected_component_labels(dd.from_pandas(edges, npartitions=3), 1 << 30)
    received = sum(sizes)
    monkeypatch.undo()
    assert received < 1000, f"received {received} bytes for 2,000 edges"
    got = labels.compute()
    assert len(got) == 4000 and (got["label"] == got["doc"] - got["doc"] % 2).all()
