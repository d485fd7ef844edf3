"""The Dask cluster a run uses: a LocalCluster by default, or any scheduler address."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from contextlib import contextmanager, nullcontext


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
    with _children_ignore_sigint():
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


def _children_ignore_sigint():
    """While the local workers are spawned, SIGINT is ignored, and they inherit that.

    A Ctrl-C at a terminal goes to every process of the foreground group; the workers would
    each die with a KeyboardInterrupt traceback. Ignoring it, they leave the interrupt to
    the driver, which closes the cluster (and so them) and says what happened in one line.
    """
    if threading.current_thread() is not threading.main_thread():
        return nullcontext()
    return _sigint_ignored()


@contextmanager
def _sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def stop_on_first_interrupt():
    """The first SIGINT raises KeyboardInterrupt; later ones are ignored, so the cleanup
    it starts (closing the cluster, releasing the lock) is not itself interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
