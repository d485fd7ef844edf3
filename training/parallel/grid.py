"""The TP x CP x DP x PP process grid and its named communication groups.

Rank order (Megatron's): TP innermost, then CP, then DP, then PP, so a TP group is a block of
adjacent ranks (one node, NVLink) and a PP group strides across the whole world:

    rank = ((pp_rank * dp + dp_rank) * cp + cp_rank) * tp + tp_rank

Groups are created once, on every rank in the same order (torch requires it), and every other
module asks for them by name: `tp`, `cp` (ranks sharing each sequence), `dp`, `dp_cp` (the
ranks that reduce replicated gradients: DP x CP), `pp`, `model` (TP x PP: one model replica's
weights) and `embedding` (first and last pipeline stage, which share the tied word embedding).
MoE layers fold the same ranks their own way (ETP x EP x EDP x PP, training/moe/mapping.py):
groups `ep`, `etp`, `edp` and `tp_cp`.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
from dataclasses import dataclass, field

import psutil
import torch
import torch.distributed as dist

from training.moe.mapping import MOE_GROUP_NAMES, mapping_problem, moe_coords, moe_groups
from training.parallel import comm
from training.parallel.comm import SOLO

GROUP_NAMES = ("tp", "cp", "dp", "dp_cp", "pp", "model", "embedding") + MOE_GROUP_NAMES


class LayoutError(ValueError):
    """A TP x PP x DP layout that cannot run on this world."""


@dataclass(frozen=True)
class GridLayout:
    """Pure rank arithmetic of the grid; knows nothing of torch.distributed."""

    tp: int
    pp: int
    dp: int
    cp: int = 1
    ep: int = 1
    etp: int = 1

    @property
    def world_size(self) -> int:
        return self.tp * self.cp * self.dp * self.pp

    def check_world(self, world_size: int) -> None:
        problem = mapping_problem(self)
        if problem:
            raise LayoutError(problem)
        if self.world_size != world_size:
            cp = f" x cp={self.cp}" if self.cp > 1 else ""
            raise LayoutError(
                f"parallel layout tp={self.tp} x pp={self.pp} x dp={self.dp}{cp} = "
                f"{self.world_size} ranks, but the world has {world_size} processes"
            )

    def coords(self, rank: int) -> tuple[int, int, int]:
        """(pp_rank, dp_rank, tp_rank) of a global rank."""
        pp_rank, dp_rank, _, tp_rank = self.coords4(rank)
        return pp_rank, dp_rank, tp_rank

    def coords4(self, rank: int) -> tuple[int, int, int, int]:
        """(pp_rank, dp_rank, cp_rank, tp_rank) of a global rank."""
        rest, tp_rank = divmod(rank, self.tp)
        rest, cp_rank = divmod(rest, self.cp)
        pp_rank, dp_rank = divmod(rest, self.dp)
        return pp_rank, dp_rank, cp_rank, tp_rank

    def rank(self, pp_rank: int, dp_rank: int, tp_rank: int, cp_rank: int = 0) -> int:
        return ((pp_rank * self.dp + dp_rank) * self.cp + cp_rank) * self.tp + tp_rank

    def groups(self, name: str) -> list[list[int]]:
        """Every group of that kind, as sorted rank lists partitioning (or covering) the world."""
        cells = itertools.product(range(self.pp), range(self.dp), range(self.cp), range(self.tp))
        key = {
            "tp": lambda p, d, c, t: (p, d, c),
            "cp": lambda p, d, c, t: (p, d, t),
            "dp": lambda p, d, c, t: (p, c, t),
            "dp_cp": lambda p, d, c, t: (p, t),
            "pp": lambda p, d, c, t: (d, c, t),
            "model": lambda p, d, c, t: (d, c),
        }
        if name in MOE_GROUP_NAMES:
            return moe_groups(self, name)
        if name == "embedding":
            ends = sorted({0, self.pp - 1})
            return [[self.rank(p, d, t, c) for p in ends]
                    for d in range(self.dp) for c in range(self.cp) for t in range(self.tp)]
        if name not in key:
            raise KeyError(f"unknown group {name!r}; groups are {GROUP_NAMES}")
        found: dict[tuple, list[int]] = {}
        for p, d, c, t in cells:
            found.setdefault(key[name](p, d, c, t), []).append(self.rank(p, d, t, c))
        return [sorted(ranks) for ranks in found.values()]


@dataclass
class ProcessGrid:
    """This rank's place in the grid and its groups (`SOLO` for a group of one rank)."""

    layout: GridLayout
    rank: int
    device: torch.device
    _groups: dict[str, object] = field(default_factory=dict)

    @property
    def pp_rank(self) -> int:
        return self.layout.coords(self.rank)[0]

    @property
    def dp_rank(self) -> int:
        return self.layout.coords(self.rank)[1]

    @property
    def tp_rank(self) -> int:
        return self.layout.coords(self.rank)[2]

    @property
    def cp_rank(self) -> int:
        return self.layout.coords4(self.rank)[2]

    @property
    def moe_coords(self) -> tuple[int, int, int, int]:
        """(pp_rank, edp_rank, ep_rank, etp_rank) in the MoE mapping."""
        return moe_coords(self.layout, self.rank)

    @property
    def dp_cp_rank(self) -> int:
        """This rank's place in its `dp_cp` group (ranks sorted: DP-major, then CP)."""
        return self.dp_rank * self.layout.cp + self.cp_rank

    def ranks(self, name: str) -> list[int]:
        """The global ranks of this rank's group `name`."""
        return next(g for g in self.layout.groups(name) if self.rank in g)

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.layout.pp - 1

    def group(self, name: str):
        if name not in GROUP_NAMES:
            raise KeyError(f"unknown group {name!r}; groups are {GROUP_NAMES}")
        return self._groups.get(name, SOLO)

    def size(self, name: str) -> int:
        return {"tp": self.layout.tp, "cp": self.layout.cp, "dp": self.layout.dp,
                "dp_cp": self.layout.dp * self.layout.cp, "pp": self.layout.pp,
                "model": self.layout.tp * self.layout.pp,
                "embedding": min(self.layout.pp, 2)}.get(name) or len(self.ranks(name))


def _is_loopback(host: str) -> bool:
    """An address (IPv4 or IPv6) or a name that resolves to a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except OSError:
        return False


def _loopback_interface() -> str | None:
    """The name of this machine's loopback interface ('lo' on Linux, 'lo0' on macOS)."""
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and _is_loopback(a.address) for a in addresses):
            return name
    return None


def _pin_sockets_to_loopback() -> None:
    """A loopback MASTER_ADDR means every rank runs on this machine, so gloo's and NCCL's
    sockets go on the loopback interface too; by default they listen on whatever interface
    the hostname resolves to. An interface the user chose is left alone."""
    if not _is_loopback(os.environ.get("MASTER_ADDR", "")):
        return
    interface = _loopback_interface()
    if interface is not None:
        for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            os.environ.setdefault(variable, interface)


def _start_process_group(backend: str) -> None:
    """Join the launcher's world (torchrun / elastic env vars), or make a world of one."""
    if dist.is_initialized():
        return
    _pin_sockets_to_loopback()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        # torchrun keeps one store across restarts; without a per-attempt prefix a restarted
        # rank can read a dead rank's address from the previous attempt and never connect.
        client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                               is_master=False)
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"attempt-{attempt}", client),
                                rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    elif "RANK" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def build_grid(tp: int, pp: int, dp: int, device: str = "cpu", cp: int = 1, ep: int = 1,
               etp: int = 1) -> ProcessGrid:
    """Create the process group (gloo on CPU, NCCL on CUDA) and every named group once."""
    layout = GridLayout(tp, pp, dp, cp, ep, etp)
    world = int(os.environ.get("WORLD_SIZE", "1")) if not dist.is_initialized() \
        else dist.get_world_size()
    layout.check_world(world)
    if device == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    _start_process_group("nccl" if device == "cuda" else "gloo")
    grid = ProcessGrid(layout, dist.get_rank(), torch_device)
    for name in GROUP_NAMES:
        for ranks in layout.groups(name):
            # new_group is collective over the world: every rank creates every group.
            handle = dist.new_group(ranks) if world > 1 and len(ranks) > 1 else None
            if grid.rank in ranks and len(ranks) > 1:
                grid._groups[name] = handle
                comm.name_group(handle, name)
    return grid


def destroy_grid() -> None:
    comm.forget_groups()
    if dist.is_initialized():
        dist.destroy_process_group()
