"""Pipeline schedules as data: GPipe, 1F1B (PipeDream-Flush) and Megatron's interleaved 1F1B.

A builder returns a `Schedule`: for each pipeline rank, the ordered list of `Step`s it runs.

    Step = (compute, comms)
        compute  an `Action` (FORWARD or BACKWARD of one micro-batch through one model chunk),
                 or None for a step that only communicates (the receive before the first
                 forward on a non-first stage).
        comms    the point-to-point ops (`P2P`) posted *after* the compute as one batch
                 (`comm.post_p2p`); see pipeline.py for what waits on what.

A batch holds the sends of the computes since the previous batch together with the receives
the *next* computes need, so neighbours exchange in one batched call instead of two blocking
ones. GPipe and 1F1B batch after every compute (Megatron's `send_forward_recv_backward` /
`send_backward_recv_forward`); the interleaved steady state runs a forward and a backward,
then one batch (`send_forward_backward_recv_forward_backward`), and its forward's step has
no ops. An empty `comms` posts and waits for nothing.

Runtime contract. A rank keeps its received tensors keyed by `(payload, microbatch, chunk)`:
a RECV stores one there, a FORWARD / BACKWARD pops the one it needs (stage 0's forward reads
the data instead; the last stage's backward starts from the loss). A SEND ships the output a
compute left under the same key: the activation of a FORWARD, the input gradient of a BACKWARD.
`chunk` is always the chunk *on the rank that holds the op*: the chunk that produced a sent
tensor, or the chunk that will consume a received one. Model chunk `c` on rank `r` is global
virtual stage `c * p + r`, so activations leaving the last rank enter chunk `c + 1` on rank 0.
With one rank and several chunks, the hand-off between chunks is local and has no op.

`schedule_sim.validate` proves a schedule runs (matched sends and receives, no deadlock); the
same module turns it into a timeline, the bubble fraction and the peak in-flight count.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    FORWARD = "F"
    BACKWARD = "B"


class Op(Enum):
    SEND = "send"
    RECV = "recv"


class Payload(Enum):
    ACTIVATION = "activation"  # flows to the next stage with the forward pass
    GRADIENT = "gradient"  # flows to the previous stage with the backward pass


@dataclass(frozen=True)
class Action:
    """One compute: a forward or backward of `microbatch` through this rank's model `chunk`."""

    kind: Kind
    microbatch: int
    chunk: int = 0

    def __str__(self) -> str:
        return f"{self.kind.value}{self.microbatch}.{self.chunk}"


@dataclass(frozen=True)
class P2P:
    """One point-to-point op of a batch: send to / receive from pipeline rank `peer`."""

    op: Op
    peer: int
    payload: Payload
    microbatch: int
    chunk: int = 0

    def __str__(self) -> str:
        direction = "to" if self.op is Op.SEND else "from"
        return (f"{self.op.value} {self.payload.value} of microbatch {self.microbatch} "
                f"chunk {self.chunk} {direction} rank {self.peer}")


@dataclass(frozen=True)
class Step:
    """A compute (or None), then its batch of point-to-point ops, waited on as a whole."""

    compute: Action | None
    comms: tuple[P2P, ...] = ()

    @property
    def sends(self) -> tuple[P2P, ...]:
        return tuple(op for op in self.comms if op.op is Op.SEND)

    @property
    def recvs(self) -> tuple[P2P, ...]:
        return tuple(op for op in self.comms if op.op is Op.RECV)


@dataclass(frozen=True)
class Schedule:
    """Per-rank step lists for `p` pipeline ranks, `m` micro-batches and `v` chunks per rank."""

    name: str
    p: int
    m: int
    v: int
    ranks: tuple[tuple[Step, ...], ...]

    @property
    def num_stages(self) -> int:
        return self.p * self.v

    def stage(self, rank: int, chunk: int) -> int:
        """Global virtual stage of model chunk `chunk` on pipeline rank `rank`."""
        return chunk * self.p + rank

    def actions(self, rank: int) -> list[Action]:
        """The rank's computes in order, without the communication."""
        return [step.compute for step in self.ranks[rank] if step.compute is not None]


def _check_sizes(p: int, m: int, v: int = 1) -> None:
    if p < 1:
        raise ValueError(f"pipeline size p must be >= 1, got {p}")
    if m < 1:
        raise ValueError(f"number of micro-batches m must be >= 1, got {m}")
    if v < 1:
        raise ValueError(f"virtual stages per rank v must be >= 1, got {v}")


# --------------------------------------------------------------------------- compute orders
#
# An order is a list of groups: the computes of one group run back to back and share one batch
# of p2p ops after the last of them (see `_with_communication`).


def _gpipe_order(m: int) -> list[list[Action]]:
    """All forwards, then all backwards (the same on every rank): every micro-batch's
    activations are held at once."""
    forwards = [[Action(Kind.FORWARD, mb)] for mb in range(m)]
    backwards = [[Action(Kind.BACKWARD, mb)] for mb in range(m)]
    return forwards + backwards


def _one_f_one_b_order(p: int, m: int, rank: int) -> list[list[Action]]:
    """PipeDream-Flush: fill the pipe, alternate one forward and one backward, drain it.

    Every compute gets its own batch, as in Megatron's non-interleaved schedule: after a
    forward, send_forward_recv_backward; after a backward, send_backward_recv_forward.
    """
    num_warmup = min(p - rank - 1, m)
    num_steady = m - num_warmup
    warmup = [[Action(Kind.FORWARD, mb)] for mb in range(num_warmup)]
    steady = []
    for i in range(num_steady):
        steady.append([Action(Kind.FORWARD, num_warmup + i)])
        steady.append([Action(Kind.BACKWARD, i)])
    cooldown = [[Action(Kind.BACKWARD, mb)] for mb in range(num_steady, m)]
    return warmup + steady + cooldown


def _interleaved_chunk(k: int, p: int, v: int, kind: Kind) -> Action:
    """The k-th forward (or backward) of a rank: micro-batches go through the chunks in groups
    of p, forwards chunk 0 first, backwards the last chunk first (Megatron's
    `get_model_chunk_id`)."""
    group, in_group = divmod(k, p * v)
    chunk = in_group // p
    if kind is Kind.BACKWARD:
        chunk = v - 1 - chunk
    return Action(kind, group * p + in_group % p, chunk)


def _interleaved_order(p: int, m: int, v: int, rank: int) -> list[list[Action]]:
    """Megatron-LM (2021) interleaved 1F1B over m*v chunk-sized forwards and backwards.

    In the steady state one forward and one backward share a batch
    (send_forward_backward_recv_forward_backward): with a batch per compute, every rank would
    send a gradient to its predecessor while that one sends its own, and the ring deadlocks.
    """
    total = m * v
    num_warmup = min((p - rank - 1) * 2 + (v - 1) * p, total)
    num_steady = total - num_warmup
    warmup = [[_interleaved_chunk(k, p, v, Kind.FORWARD)] for k in range(num_warmup)]
    steady = [[_interleaved_chunk(num_warmup + i, p, v, Kind.FORWARD),
               _interleaved_chunk(i, p, v, Kind.BACKWARD)] for i in range(num_steady)]
    cooldown = [[_interleaved_chunk(k, p, v, Kind.BACKWARD)] for k in range(num_steady, total)]
    return warmup + steady + cooldown


# --------------------------------------------------------------------------- communication


def _neighbours(p: int, v: int, rank: int, chunk: int) -> tuple[int | None, int | None]:
    """Ranks holding the previous and next virtual stage (None at the ends of the model)."""
    stage = chunk * p + rank
    previous = (stage - 1) % p if stage > 0 else None
    following = (stage + 1) % p if stage < p * v - 1 else None
    return previous, following


def _recvs_for(action: Action, p: int, v: int, rank: int) -> list[P2P]:
    """What must have arrived before `action` can run: the input activation or output grad."""
    previous, following = _neighbours(p, v, rank, action.chunk)
    if action.kind is Kind.FORWARD and previous not in (None, rank):
        return [P2P(Op.RECV, previous, Payload.ACTIVATION, action.microbatch, action.chunk)]
    if action.kind is Kind.BACKWARD and following not in (None, rank):
        return [P2P(Op.RECV, following, Payload.GRADIENT, action.microbatch, action.chunk)]
    return []


def _sends_for(action: Action, p: int, v: int, rank: int) -> list[P2P]:
    """What `action` hands on: its output activation forward, its input gradient backward."""
    previous, following = _neighbours(p, v, rank, action.chunk)
    if action.kind is Kind.FORWARD and following not in (None, rank):
        return [P2P(Op.SEND, following, Payload.ACTIVATION, action.microbatch, action.chunk)]
    if action.kind is Kind.BACKWARD and previous not in (None, rank):
        return [P2P(Op.SEND, previous, Payload.GRADIENT, action.microbatch, action.chunk)]
    return []


def _with_communication(groups: list[list[Action]], p: int, v: int, rank: int
                        ) -> tuple[Step, ...]:
    """Attach the p2p ops. Each group's computes run back to back; after the last one, a single
    batch sends all their outputs and receives what the next group needs."""
    steps = []
    first_recvs = [op for action in groups[0] for op in _recvs_for(action, p, v, rank)]
    if first_recvs:
        steps.append(Step(None, tuple(first_recvs)))
    for group, following in zip(groups, groups[1:] + [[]], strict=True):
        comms = [op for action in group for op in _sends_for(action, p, v, rank)]
        comms += [op for action in following for op in _recvs_for(action, p, v, rank)]
        steps += [Step(action) for action in group[:-1]]
        steps.append(Step(group[-1], tuple(comms)))
    return tuple(steps)


def _schedule(name: str, p: int, m: int, v: int, orders: list[list[list[Action]]]) -> Schedule:
    ranks = tuple(_with_communication(order, p, v, rank) for rank, order in enumerate(orders))
    return Schedule(name, p, m, v, ranks)


# --------------------------------------------------------------------------- builders


def gpipe(p: int, m: int) -> Schedule:
    """GPipe: m forwards then m backwards per rank; bubble (p-1)/m, m micro-batches in flight."""
    _check_sizes(p, m)
    return _schedule("gpipe", p, m, 1, [_gpipe_order(m) for _ in range(p)])


def one_f_one_b(p: int, m: int) -> Schedule:
    """1F1B (PipeDream-Flush): GPipe's bubble (p-1)/m, but at most p - rank in flight."""
    _check_sizes(p, m)
    return _schedule("1f1b", p, m, 1, [_one_f_one_b_order(p, m, rank) for rank in range(p)])


def interleaved_one_f_one_b(p: int, m: int, v: int) -> Schedule:
    """Interleaved 1F1B with v model chunks per rank: bubble (p-1)/(v*m), more p2p traffic."""
    _check_sizes(p, m, v)
    if v < 2:
        raise ValueError(f"interleaved schedule needs v >= 2 virtual stages per rank, got {v}; "
                         "with v = 1 use one_f_one_b")
    if m % p:
        raise ValueError(f"interleaved schedule needs the number of micro-batches ({m}) to be a "
                         f"multiple of the pipeline size ({p})")
    orders = [_interleaved_order(p, m, v, rank) for rank in range(p)]
    return _schedule("interleaved", p, m, v, orders)


def build_schedule(name: str, p: int, m: int, v: int = 1) -> Schedule:
    """The schedule a config names (`parallel.schedule`: gpipe, 1f1b or interleaved)."""
    if name == "interleaved":
        return interleaved_one_f_one_b(p, m, v)
    if v != 1:
        raise ValueError(f"schedule {name!r} runs one model chunk per rank, got v = {v}; "
                         "use the interleaved schedule for virtual stages")
    if name == "gpipe":
        return gpipe(p, m)
    if name == "1f1b":
        return one_f_one_b(p, m)
    raise ValueError(f"unknown pipeline schedule {name!r}: expected gpipe, 1f1b or interleaved")
