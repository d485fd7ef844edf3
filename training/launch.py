"""Start N worker processes on this machine through torch's own elastic launcher (the engine
behind `torchrun --standalone`): a c10d rendezvous on a free loopback port, the usual
RANK / WORLD_SIZE / MASTER_ADDR / LOCAL_WORLD_SIZE environment in every worker, and each
worker's return value handed back to the caller."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

from torch.distributed.launcher.api import LaunchConfig, elastic_launch


def under_launcher() -> bool:
    """True inside a process started by torchrun or by `launch` (ranks come from the env)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def launch(nproc: int, entrypoint: Callable, *args) -> dict[int, object]:
    """Run `entrypoint(*args)` in `nproc` fresh processes; returns {rank: return value}.
    `entrypoint` must be a module-level function (workers are spawned, not forked)."""
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"textmill-{uuid.uuid4().hex}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
        start_method="spawn", monitor_interval=0.1)
    return elastic_launch(config, entrypoint)(*args)
