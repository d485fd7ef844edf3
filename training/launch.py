"""Start N worker processes on this machine through torch's own elastic launcher (the engine
behind `torchrun --standalone`), with every listener it opens bound to loopback.

torch's TCPStore binds to all interfaces whatever host it is given, so a bare
`pretrain --nproc N` would expose its rendezvous store to the network. Here the launcher
gets a rendezvous backend of ours (`textmill-loopback`) whose two stores, the rendezvous
store and the bootstrap store the workers join, are handed a socket already bound to
127.0.0.1. Everything else is torch's: the agent, the restarts, RANK / WORLD_SIZE /
MASTER_ADDR / LOCAL_WORLD_SIZE in every worker, each worker's return value handed back."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import timedelta

import torch.distributed as dist
from torch.distributed.elastic.rendezvous import (
    RendezvousParameters,
    rendezvous_handler_registry,
)
from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

LOOPBACK = "127.0.0.1"
RENDEZVOUS_BACKEND = "textmill-loopback"
STORE_TIMEOUT = timedelta(seconds=300)


def under_launcher() -> bool:
    """True inside a process started by torchrun or by `launch` (ranks come from the env)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def loopback_store() -> dist.TCPStore:
    """A TCPStore server on a free port that listens on 127.0.0.1 only: the socket is bound
    here and its descriptor handed over, so the store never binds a wildcard address."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(socket.SOMAXCONN)
        port = listener.getsockname()[1]
    except BaseException:
        listener.close()
        raise
    return dist.TCPStore(LOOPBACK, port, is_master=True, multi_tenant=True,
                         timeout=STORE_TIMEOUT, use_libuv=True,
                         master_listen_fd=listener.detach())  # the store owns the fd now


class LoopbackRendezvousHandler(DynamicRendezvousHandler):
    """torch's dynamic rendezvous, except that the bootstrap store it opens on rank 0 (the
    one the workers' process groups join) listens on loopback only."""

    def _create_tcp_store_server(self, master_addr, master_port) -> dist.TCPStore:
        return loopback_store()

    def get_backend(self) -> str:
        return RENDEZVOUS_BACKEND


def create_loopback_handler(params: RendezvousParameters) -> LoopbackRendezvousHandler:
    store = loopback_store()
    return LoopbackRendezvousHandler.from_backend(
        run_id=params.run_id, store=store, backend=C10dRendezvousBackend(store, params.run_id),
        min_nodes=params.min_nodes, max_nodes=params.max_nodes, local_addr=LOOPBACK)


rendezvous_handler_registry.register(RENDEZVOUS_BACKEND, create_loopback_handler)


def launch(nproc: int, entrypoint: Callable, *args) -> dict[int, object]:
    """Run `entrypoint(*args)` in `nproc` fresh processes; returns {rank: return value}.
    `entrypoint` must be a module-level function (workers are spawned, not forked)."""
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"textmill-{uuid.uuid4().hex}",
        rdzv_backend=RENDEZVOUS_BACKEND, rdzv_endpoint=f"{LOOPBACK}:0", local_addr=LOOPBACK,
        max_restarts=0, start_method="spawn", monitor_interval=0.1)
    return elastic_launch(config, entrypoint)(*args)
