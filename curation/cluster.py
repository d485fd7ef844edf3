"""The Dask cluster a run uses: a LocalCluster by default, or any scheduler address."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                dashboard: str = "127.0.0.1:0", quiet: bool = False):
    """A connected `dask.distributed.Client`; a local cluster is closed on exit.

    Local clusters listen on loopback only (scheduler and dashboard), one thread per
    worker process: stages are CPU-bound Python, and processes sidestep the GIL.
    """
    from dask.distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        if not quiet:
            print(f"dask: connected to {scheduler} ({_worker_count(client)} workers); "
                  f"dashboard {client.dashboard_link}", file=sys.stderr)
        try:
            yield client
        finally:
            client.close()
        return
    n = workers or default_workers()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=dashboard,
                           silence_logs=logging.CRITICAL)
    client = Client(cluster)
    if not quiet:
        print(f"dask: local cluster, {n} workers; dashboard {client.dashboard_link}",
              file=sys.stderr)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _worker_count(client) -> int:
    return len(client.scheduler_info().get("workers", {}))
