"""Guards for tests of work that must not grow with the corpus in the `curate` process.

`forbid_data_reads` makes every way this code reads a data file (parquet, Arrow IPC) fail
in the test process, which plays the driver; the workers of a process-based LocalCluster
are other processes and read as usual. `received_bytes` counts what the driver receives
from the cluster (pickled size of every gathered result).
"""

from __future__ import annotations

import pickle

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq


def forbid_data_reads(monkeypatch) -> None:
    def refuse(name):
        def read(*args, **kwargs):
            raise AssertionError(f"the driver read data: {name}{args[:1]}")
        return read

    for module, name in ((pq, "read_table"), (pq, "ParquetFile"), (pa, "memory_map"),
                         (pa, "OSFile"), (pyarrow.ipc, "open_file")):
        monkeypatch.setattr(module, name, refuse(f"{module.__name__}.{name}"))


def received_bytes(monkeypatch) -> list[int]:
    """A list that grows by the pickled size of every result the driver gathers."""
    from distributed import Client, Future

    sizes: list[int] = []
    gather, result = Client.gather, Future.result

    def counted_gather(self, *args, **kwargs):
        value = gather(self, *args, **kwargs)
        sizes.append(len(pickle.dumps(value)))
        return value

    def counted_result(self, *args, **kwargs):
        value = result(self, *args, **kwargs)
        sizes.append(len(pickle.dumps(value)))
        return value

    monkeypatch.setattr(Client, "gather", counted_gather)
    monkeypatch.setattr(Future, "result", counted_result)
    return sizes


def submitted_tasks(monkeypatch) -> list[str]:
    """A list that grows by the key of every task the driver submits with `Client.submit`."""
    from distributed import Client

    keys: list[str] = []
    submit = Client.submit

    def counted_submit(self, *args, **kwargs):
        future = submit(self, *args, **kwargs)
        keys.append(future.key)
        return future

    monkeypatch.setattr(Client, "submit", counted_submit)
    return keys
