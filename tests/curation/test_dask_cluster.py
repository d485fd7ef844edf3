"""`curate run --scheduler`: a scheduler and two workers as separate OS processes on loopback
give the same outputs, byte for byte, as the default LocalCluster."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curation.cli import main as curate
from curation.pipeline import run_pipeline
from curation.spec import load_spec
from tests.curation.run_outputs import assert_same_outputs
from tests.curation.test_pipeline import write_corpus

DASK = str(Path(sys.executable).with_name("dask"))
SPEC = """
name: cluster
seed: 5
sources:
  - {name: a, paths: ["a/*.jsonl"], id_field: id, priority: 10}
  - {name: b, paths: ["b/*.jsonl"], priority: 1}
read: {partition_rows: 9}
stages: {normalize: {}, exact_dedup: {}, fuzzy_dedup: {num_perm: 32}}
tokenizer: {train: {vocab_size: 300}, shard_tokens: 400}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler_address():
    """`dask scheduler` + two `dask worker`s, each its own process group, killed at the end."""
    from dask.distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
             "start_new_session": True}
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0"], **quiet)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard"], **quiet))
        deadline = time.monotonic() + 120
        with Client(address, timeout=120) as client:
            client.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
            pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_a_separate_process_cluster_gives_the_local_clusters_outputs(
        scheduler_address, dask_cluster_client, tmp_path):
    write_corpus(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml")
    run_pipeline(spec, tmp_path / "local", dask_cluster_client)
    assert curate(["run", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "remote"),
                   "--scheduler", scheduler_address]) == 0
    assert_same_outputs(str(tmp_path / "local"), str(tmp_path / "remote"))
