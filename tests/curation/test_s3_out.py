"""OUT on object storage: a real S3 API (moto's server on loopback) in place of a folder.

The same spec gives byte-identical curated data, ledger and token shards on S3 as on a local
disk, and a run cut off on S3 resumes there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from curation.cli import main as curate
from curation.pipeline import run_pipeline
from curation.spec import load_spec
from tests.curation.run_outputs import assert_same_outputs
from tests.curation.test_dask_cluster import SPEC, free_port
from tests.curation.test_pipeline import sentence, write_corpus

MOTO = str(Path(sys.executable).with_name("moto_server"))


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1; AWS_* variables point s3fs (and Dask workers) at it."""
    port = free_port()
    server = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        yield endpoint
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_client(s3_endpoint):
    """A LocalCluster started after the AWS_* variables are set, so its workers see them."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=40)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def new_bucket(name: str) -> str:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"


# Every stage that keeps files of its own in OUT (the quality model, the task n-gram tables,
# the selection's per-partition arrays and GOT-D chunks).
S3_SPEC = SPEC.replace("stages: {", """stages: {
  quality: {positive: [a], negative: [b], threshold: 0.2, epoch: 5, min_count: 1},
  decontaminate: {ngram: 8, tasks: [{name: qa, paths: [qa.jsonl], fields: [question]}]},
  select: {method: got, target: {paths: [qa.jsonl], text_field: question}, budget: {docs: 30},
           embedding: {dims: 16}, ot: {reg: 0.1, iters: 100, chunk: 10}},
  """)


@pytest.fixture(scope="module")
def runs(s3_client, tmp_path_factory):
    """The spec run once on local disk and once on S3."""
    root = tmp_path_factory.mktemp("s3corpus")
    write_corpus(root)
    (root / "qa.jsonl").write_text(json.dumps({"question": sentence(12)}) + "\n")
    (root / "spec.yaml").write_text(S3_SPEC)
    spec = load_spec(root / "spec.yaml")
    local = root / "local"
    run_pipeline(spec, local, s3_client)
    remote = new_bucket("curation") + "/runs/first"
    run_pipeline(spec, remote, s3_client)
    return spec, local, remote


@pytest.mark.slow
def test_s3_out_matches_local_out(runs):
    _, local, remote = runs
    assert_same_outputs(str(local), remote)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    assert fs.exists("curation/runs/first/stages/00_read/_manifest.json")
    assert fs.exists("curation/runs/first/stages/_input_hashes.json")
    assert not [p for p in fs.find("curation/runs/first") if p.endswith(".tmp")]
    assert not Path("s3:").exists()  # what a pathlib.Path of the URL would have written


@pytest.mark.slow
def test_a_cut_run_on_s3_resumes_there_through_the_cli(runs, capfd):
    spec, local, remote = runs
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    # Cut off during fuzzy dedup: its manifest and one finished partition are gone, and
    # nothing after it was written.
    run = remote.removeprefix("s3://")
    stage = f"{run}/stages/06_fuzzy_dedup"
    fs.rm(f"{stage}/_manifest.json")
    fs.rm(f"{stage}/stats/part-00001.json")
    for later in ("stages/07_decontaminate", "stages/08_select", "curated", "ledger", "tokens"):
        fs.rm(f"{run}/{later}", recursive=True)
    capfd.readouterr()
    spec_path = str(spec.base_dir / "spec.yaml")
    assert curate(["run", spec_path, "--out", remote, "--workers", "2"]) == 0
    err = capfd.readouterr().err
    assert "exact_dedup: finished earlier with the same inputs; skipped" in err
    assert f"{remote}: not locked (object storage has no file locks)" in err
    assert not fs.exists(f"{run}/.lock")
    assert fs.exists(f"{run}/report.md")
    assert_same_outputs(str(local), remote)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_pretrain_reads_s3_through_a_verified_local_cache(runs, tmp_path, monkeypatch):
    from training.cli import main as pretrain

    _, local, remote = runs
    monkeypatch.setenv("TEXTMILL_DATA_CACHE", str(tmp_path / "cache"))
    common = ["tiny", "--set", "model.seq_len=16", "--set", "train.steps=3",
              "--set", "train.eval_every=3", "--set", "train.save_every=100",
              "--set", "batch.global=4", "--set", "batch.micro=2"]
    assert pretrain([*common, "--set", f"data.curated={local}",
                     "--set", f"train.dir={tmp_path / 'local'}"]) == 0
    assert pretrain([*common, "--set", f"data.curated={remote}",
                     "--set", f"train.dir={tmp_path / 'remote'}"]) == 0
    assert [r["loss"] for r in metrics(tmp_path / "remote")] == \
        [r["loss"] for r in metrics(tmp_path / "local")]
    cached = sorted((tmp_path / "cache").glob("*/tokens/*/shard-*.arrow"))
    assert cached and all(p.read_bytes() == (local / p.relative_to(p.parents[2])).read_bytes()
                          for p in cached)


@pytest.mark.slow
def test_a_shard_that_does_not_match_its_manifest_is_never_cached(runs, tmp_path):
    from training.data.remote_cache import local_curated
    from training.data.shards import ShardError

    _, local, remote = runs
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    copy = new_bucket("corrupt") + "/run"
    fs.put(str(local) + "/", copy.removeprefix("s3://"), recursive=True)
    shard = next(p for p in fs.find("corrupt/run/tokens") if p.endswith(".arrow"))
    data = bytearray(fs.cat_file(shard))
    data[-20] ^= 0xFF  # same size, different bytes
    fs.pipe_file(shard, bytes(data))
    with pytest.raises(ShardError, match="sha256 .* does not match"):
        local_curated(copy, cache_root=tmp_path)
    assert not list(tmp_path.glob(f"*/tokens/*/{Path(shard).name}"))
    assert not list(tmp_path.glob("*/_copied.json"))


@pytest.mark.slow
def test_report_and_inspect_read_s3_in_place(runs, capsys):
    _, local, remote = runs
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    run = remote.removeprefix("s3://")
    assert curate(["report", remote]) == 0
    assert fs.exists(f"{run}/report.md") and fs.exists(f"{run}/report.html")
    assert any(p.endswith(".png") for p in fs.find(f"{run}/report"))
    assert "exact_dedup" in fs.cat_file(f"{run}/report.md").decode()
    assert not fs.exists(f"{run}/s3:")
    capsys.readouterr()
    assert curate(["inspect", "shard", f"{remote}/tokens/a"]) == 0
    shard = capsys.readouterr().out
    assert "sha256: OK" in shard and "MISMATCH" not in shard
    assert curate(["inspect", "doc", remote, "b/all.jsonl/0"]) == 0
    doc = capsys.readouterr().out
    assert "curated: no — removed by" in doc
