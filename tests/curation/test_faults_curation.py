"""Curation under faults, with real processes: a SIGKILLed Dask worker, a SIGKILLed
`curate run` that is run again, and the safety rules (safe YAML, names that cannot leave
OUT, listeners on loopback). The machinery lives in bench/curation_faults.py (which
bench/faults.py times)."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.curation_faults import (
    KILL_POINTS,
    PER_PARTITION,
    differences,
    rerun_scenario,
    run_curate,
    snapshot,
    start_curate,
    wait_for_kill_point,
    worker_scenario,
    write_fault_corpus,
)
from bench.fault_processes import BIN, kill_group
from curation.io import zstd_module
from tests.conftest import write_jsonl


def _jsonl_lines(path: Path) -> list[bytes]:
    if path.name.endswith(".gz"):
        data = gzip.decompress(path.read_bytes())
    elif path.name.endswith(".zst"):
        with zstd_module().ZstdFile(path, mode="rb") as stream:
            data = stream.read()
    else:
        data = path.read_bytes()
    return [line for line in data.split(b"\n") if line.strip()]


def input_ids(root: Path) -> list[str]:
    """Every input record's id, computed from the raw files (not from the pipeline).

    A valid record with an id field keeps its id; every other record (and every record
    of a source without an id field) is <source>/<file>/<row>, row counted over non-blank
    lines from 0.
    """
    ids = []
    for source, id_field in (("pydocs", "id"), ("docstrings", None)):
        for path in sorted((root / "demo_data" / source).glob("*.jsonl.*")):
            for row, line in enumerate(_jsonl_lines(path)):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                valid = (isinstance(record, dict) and isinstance(record.get("text"), str)
                         and record["text"] != "")
                if valid and id_field and record.get(id_field) is not None:
                    ids.append(str(record[id_field]))
                else:
                    ids.append(f"{source}/{path.name}/{row}")
    for path in sorted((root / "demo_data" / "web").glob("*.parquet")):
        ids.extend(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return ids


@pytest.fixture(scope="module")
def fault_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return root, write_fault_corpus(root, scale=0.1, partition_rows=8)


@pytest.fixture(scope="module")
def undisturbed(fault_corpus):
    """An undisturbed `curate run` of the fault spec (LocalCluster, 2 workers)."""
    root, spec = fault_corpus
    run_curate(spec, root / "reference", root / "reference.log")
    return snapshot(root / "reference")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heuristics", "exact_dedup"])
def test_a_killed_dask_worker_does_not_change_the_result(fault_corpus, undisturbed, name):
    root, spec = fault_corpus
    point = KILL_POINTS[name]
    result = worker_scenario(spec, root / f"worker_kill_{name}", point)
    out = result["out"]
    assert result["progress_at_kill"] < len(list(out.glob(point.progress))), "not mid-stage"
    assert differences(snapshot(out), undisturbed) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["heuristics", "exact_dedup", "tokenize"])
def test_a_killed_run_reruns_to_the_same_result_and_accounts_every_id(fault_corpus,
                                                                       undisturbed, name):
    root, spec = fault_corpus
    point = KILL_POINTS[name]
    result = rerun_scenario(spec, root / f"run_kill_{name}", point)
    out = result["out"]
    rerun_log = result["log"].read_text()
    assert "normalize: finished earlier with the same inputs; skipped" in rerun_log
    if name != "tokenize":  # (the token parts are deleted once the shards are cut)
        finished = len(list(out.glob(point.progress)))
        assert result["progress_at_kill"] < finished, "not killed mid-stage"
        # the partitions finished before the kill were kept, not redone
        assert {path: path.stat().st_mtime_ns for path in result["finished_at_kill"]} == \
            result["finished_at_kill"]
    got = snapshot(out)
    assert differences(got, undisturbed) == []

    ids = input_ids(root)
    read = json.loads((out / "stages" / "00_read" / "_manifest.json").read_text())
    assert len(ids) == len(set(ids)) == read["totals"]["docs_in"]
    kept = got.curated["id"]
    removed = got.ledger.loc[got.ledger["action"] == "removed", "id"]
    assert not kept.duplicated().any(), "a curated id twice"
    assert not removed.duplicated().any(), "an id removed twice"
    assert set(kept).isdisjoint(removed)
    assert set(kept) | set(removed) == set(ids)


@pytest.mark.slow
def test_orphaned_workers_of_a_killed_run_exit(fault_corpus, tmp_path):
    """Only the `curate run` driver is killed: its LocalCluster workers must not live on
    (and keep writing into OUT) after it."""
    import psutil

    _, spec = fault_corpus
    proc = start_curate(spec, tmp_path / "out", tmp_path / "run.log")
    try:
        wait_for_kill_point(tmp_path / "out", proc, PER_PARTITION)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "a LocalCluster run has worker processes"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=60)
        assert alive == [], f"{len(alive)} worker process(es) outlived the killed driver"
    finally:
        kill_group(proc)


# --- safety -------------------------------------------------------------------------


def _tiny_corpus(root: Path) -> None:
    records = [{"id": f"d{i}", "text": f"Document number {i} talks about rivers and stones. "
                "It has a second sentence, and a third one that ends here."} for i in range(6)]
    write_jsonl(root / "data" / "a.jsonl", records)


def _curate(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "curate"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_a_python_object_tag_in_a_spec_is_rejected_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "spec.yaml").write_text(
        "name: !!python/object/apply:os.system ['touch " + str(marker) + "']\n"
        "sources: [{name: a, paths: ['data/*.jsonl']}]\n")
    _tiny_corpus(tmp_path)
    done = _curate("run", "spec.yaml", "--out", "out", "--workers", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert "spec.yaml" in done.stderr and "not valid YAML" in done.stderr
    assert "python/object" in done.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../escape", "/tmp/escape", "..", "a/../../b", ".hidden"])
def test_a_source_name_cannot_name_a_folder_outside_out(tmp_path, capsys, name):
    from curation.cli import main as curate

    _tiny_corpus(tmp_path)
    spec = {"name": "s", "sources": [{"name": name, "paths": ["data/*.jsonl"]}]}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    assert curate(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"sources[0].name: {name!r} must be letters, digits" in err
    assert "names files under OUT" in err
    assert sorted(os.listdir(tmp_path)) == ["data", "spec.yaml"]


def _decontam_spec(tmp_path: Path, task_name: str) -> Path:
    _tiny_corpus(tmp_path)
    write_jsonl(tmp_path / "tasks" / "qa.jsonl",
                [{"q": "Document number 3 talks about rivers and stones. It has a second "
                       "sentence, and a third"}])
    spec = {"name": "s", "sources": [{"name": "a", "paths": ["data/*.jsonl"], "id_field": "id"}],
            "read": {"partition_rows": 2},
            "stages": {"decontaminate": {"ngram": 8, "min_task_words": 8, "window": 0,
                                         "min_piece": 0,
                                         "tasks": [{"name": task_name,
                                                    "paths": ["tasks/qa.jsonl"],
                                                    "fields": ["q"]}]}}}
    path = tmp_path / "work" / "spec.yaml"
    path.parent.mkdir()
    path.write_text(json.dumps(spec).replace('"data/', '"../data/').replace('"tasks/',
                                                                            '"../tasks/'))
    return path


def test_a_task_name_with_dots_and_slashes_is_refused_before_anything_is_written(tmp_path):
    spec = _decontam_spec(tmp_path, "../../escape")
    out = tmp_path / "work" / "out"
    before = {p for p in tmp_path.rglob("*")}
    done = _curate("run", str(spec), "--out", str(out), "--workers", "1", cwd=tmp_path / "work")
    assert done.returncode == 2
    assert "stages.decontaminate.tasks[0].name: '../../escape' must be letters" in done.stderr
    assert {p for p in tmp_path.rglob("*")} == before


def test_a_task_name_must_be_a_safe_name():
    from curation.spec import SpecError, parse_spec

    data = {"name": "s", "sources": [{"name": "a", "paths": ["a.jsonl"]}],
            "stages": {"decontaminate": {"tasks": [{"name": "../x", "paths": ["t.jsonl"],
                                                    "fields": ["q"]}]}}}
    with pytest.raises(SpecError) as err:
        parse_spec(data, check_files=False)
    assert "stages.decontaminate.tasks[0]" in str(err.value)
    assert "must be letters, digits" in str(err.value)


def test_the_local_cluster_listens_on_loopback_only():
    from urllib.parse import urlparse

    from curation.cluster import dask_client

    with dask_client(workers=1, quiet=True) as client:
        info = client.scheduler_info()
        scheduler = urlparse(info["address"])
        dashboard = urlparse(client.dashboard_link)
        workers = [urlparse(w) for w in info["workers"]]
        nannies = [urlparse(w["nanny"]) for w in info["workers"].values() if w.get("nanny")]
    assert scheduler.hostname == "127.0.0.1"
    assert dashboard.hostname == "127.0.0.1"
    assert workers and all(w.hostname == "127.0.0.1" for w in workers)
    assert all(n.hostname == "127.0.0.1" for n in nannies)


def test_no_listener_of_a_local_run_binds_beyond_loopback(tmp_path):
    """Every listening socket of a `curate run` process tree is on 127.0.0.1."""
    import psutil

    _tiny_corpus(tmp_path)
    spec = {"name": "s", "sources": [{"name": "a", "paths": ["data/*.jsonl"]}],
            "read": {"partition_rows": 1}, "stages": {"normalize": {}}}
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    proc = start_curate(tmp_path / "spec.yaml", tmp_path / "out", tmp_path / "run.log",
                        workers=2)
    listeners: set[str] = set()
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
                for p in tree:
                    for conn in p.net_connections(kind="inet"):
                        if conn.status == psutil.CONN_LISTEN:
                            listeners.add(conn.laddr.ip)
            except psutil.Error:
                pass
            time.sleep(0.05)
        assert proc.wait(timeout=5) == 0
    finally:
        kill_group(proc)
    assert listeners, "saw no listening socket"
    assert listeners == {"127.0.0.1"}, listeners


def _unsafe_loads(source: str) -> list[str]:
    """Calls in `source` that can run code from a file's bytes: pickle, yaml.load,
    np.load without allow_pickle=False, torch.load without weights_only=True."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if (name.split(".")[0] in ("pickle", "cloudpickle", "dill", "marshal", "shelve")
                or name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "eval", "exec")
                or (name in ("np.load", "numpy.load")
                    and keywords.get("allow_pickle") != "False")
                or (name == "torch.load" and keywords.get("weights_only") != "True")):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_checker_of_unsafe_loads_finds_them():
    assert len(_unsafe_loads("import pickle, yaml, numpy as np\npickle.loads(b)\n"
                             "yaml.load(t)\nnp.load(p)\nnp.load(p, allow_pickle=False)\n"
                             "yaml.safe_load(t)\n")) == 3


def test_nothing_the_curation_package_reads_is_unpickled():
    root = Path(__file__).resolve().parents[2] / "curation"
    found = {str(p.relative_to(root)): hits for p in sorted(root.rglob("*.py"))
             if (hits := _unsafe_loads(p.read_text(encoding="utf-8")))}
    assert found == {}
