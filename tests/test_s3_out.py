"""OUT on object storage: a real S3 API (moto's server on loopback) in place of a folder.

The same spec gives byte-identical curated data, ledger and token shards on S3 as on a local
disk, and a run cut off on S3 resumes there.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

from curation.pipeline import run_pipeline
from curation.spec import load_spec
from tests.run_outputs import assert_same_outputs
from tests.test_dask_cluster import SPEC, free_port
from tests.test_pipeline import write_corpus

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


@pytest.fixture(scope="module")
def runs(s3_client, tmp_path_factory):
    """The spec run once on local disk and once on S3."""
    root = tmp_path_factory.mktemp("s3corpus")
    write_corpus(root)
    (root / "spec.yaml").write_text(SPEC)
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
    assert not [p for p in fs.find("curation/runs/first") if p.endswith(".tmp")]


@pytest.mark.slow
def test_a_cut_run_on_s3_resumes_there(runs, s3_client, capfd):
    spec, local, _ = runs
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    remote = new_bucket("resume") + "/run"
    run_pipeline(spec, remote, s3_client)
    # Cut off during fuzzy dedup: its manifest and one finished partition are gone, and
    # nothing after it was written.
    stage = "resume/run/stages/06_fuzzy_dedup"
    fs.rm(f"{stage}/_manifest.json")
    fs.rm(f"{stage}/stats/part-00001.json")
    for later in ("curated", "ledger", "tokens"):
        fs.rm(f"resume/run/{later}", recursive=True)
    capfd.readouterr()
    run_pipeline(spec, remote, s3_client)
    assert "exact_dedup: finished earlier with the same inputs; skipped" in capfd.readouterr().err
    assert_same_outputs(str(local), remote)
