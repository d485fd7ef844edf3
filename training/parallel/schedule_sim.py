"""Run a pipeline `Schedule` on paper: validate it, time it, measure its bubble and memory.

`simulate` executes every rank's steps with the semantics the runtime has:

- a compute runs only on tensors the rank already holds (its own earlier outputs, or tensors
  a completed receive stored), and each (micro-batch, chunk) is forwarded and backwarded once;
- a step's p2p ops are posted together after its compute, and the step waits until *every*
  op of the batch has met its counterpart. Sends are rendezvous (an NCCL or gloo send of a
  large tensor does not finish before the receive is posted), so two ranks that both start
  with a blocking send to each other deadlock, while the same ops in one batch do not;
- ops between one ordered pair of ranks are matched first-posted to first-posted, as
  torch.distributed does, and a matched pair must carry the same tensor (kind, micro-batch,
  and adjacent virtual stages).

Any violation, a deadlock, or work left undone raises `ScheduleError` naming the rank and the
step. Time is exact (`Fraction`): a forward through one chunk takes `forward_time / v`, a
backward `backward_time / v`, communication is free, so idle time is the pipeline's bubble.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction
from math import gcd, lcm

from training.parallel.schedules import P2P, Action, Kind, Op, Payload, Schedule


class ScheduleError(ValueError):
    """A schedule that cannot run; the message names the rank, the step and the reason."""


@dataclass(frozen=True)
class Interval:
    start: Fraction
    end: Fraction
    action: Action


@dataclass(frozen=True)
class Timeline:
    """When each rank computed what, under the unit-time model."""

    schedule: Schedule
    ranks: tuple[tuple[Interval, ...], ...]

    @property
    def makespan(self) -> Fraction:
        return max((row[-1].end for row in self.ranks if row), default=Fraction(0))

    def busy(self, rank: int) -> Fraction:
        return sum((iv.end - iv.start for iv in self.ranks[rank]), Fraction(0))

    def idle_share(self, rank: int) -> Fraction:
        """Idle time over the whole step's time on `rank`: what a profiler would measure."""
        return (self.makespan - self.busy(rank)) / self.makespan


@dataclass
class _RankState:
    """What one rank has done so far while the simulation runs."""

    step: int = 0
    clock: Fraction = Fraction(0)
    posted: list[tuple[tuple[int, int], int]] | None = None  # (channel, index) of each op
    forwarded: set[tuple[int, int]] = field(default_factory=set)
    backwarded: set[tuple[int, int]] = field(default_factory=set)
    received: set[tuple[Payload, int, int]] = field(default_factory=set)
    intervals: list[Interval] = field(default_factory=list)


@dataclass(frozen=True)
class _Posted:
    rank: int
    step: int
    op: P2P
    time: Fraction


def _fail(rank: int, step: int, reason: str) -> ScheduleError:
    return ScheduleError(f"rank {rank} step {step}: {reason}")


class _Simulator:
    def __init__(self, schedule: Schedule, forward_time, backward_time) -> None:
        self.schedule = schedule
        p, v = schedule.p, schedule.v
        if len(schedule.ranks) != p:
            raise ScheduleError(f"schedule has {len(schedule.ranks)} ranks, expected p = {p}")
        self.durations = {Kind.FORWARD: Fraction(forward_time) / v,
                          Kind.BACKWARD: Fraction(backward_time) / v}
        self.states = [_RankState() for _ in range(p)]
        # channel (src, dst) -> posted sends, posted receives, in posting order
        self.sends: dict[tuple[int, int], list[_Posted]] = defaultdict(list)
        self.recvs: dict[tuple[int, int], list[_Posted]] = defaultdict(list)

    # ------------------------------------------------------------------ compute

    def compute(self, rank: int, step: int, action: Action) -> None:
        p, v = self.schedule.p, self.schedule.v
        state = self.states[rank]
        key = (action.microbatch, action.chunk)
        if not 0 <= action.chunk < v:
            raise _fail(rank, step, f"{action} uses chunk {action.chunk}, outside 0..{v - 1}")
        if not 0 <= action.microbatch < self.schedule.m:
            raise _fail(rank, step, f"{action} uses a micro-batch outside 0..{self.schedule.m - 1}")
        stage = self.schedule.stage(rank, action.chunk)
        if action.kind is Kind.FORWARD:
            if key in state.forwarded:
                raise _fail(rank, step, f"{action}: micro-batch forwarded twice through chunk")
            if stage > 0:
                self.take_input(rank, step, action, Payload.ACTIVATION, (stage - 1) % p,
                                (action.microbatch, action.chunk - 1), state.forwarded)
            state.forwarded.add(key)
        else:
            if key not in state.forwarded:
                raise _fail(rank, step, f"{action}: backward before its forward")
            if key in state.backwarded:
                raise _fail(rank, step, f"{action}: micro-batch backwarded twice through chunk")
            if stage < self.schedule.num_stages - 1:
                self.take_input(rank, step, action, Payload.GRADIENT, (stage + 1) % p,
                                (action.microbatch, action.chunk + 1), state.backwarded)
            state.backwarded.add(key)
        end = state.clock + self.durations[action.kind]
        state.intervals.append(Interval(state.clock, end, action))
        state.clock = end

    def take_input(self, rank: int, step: int, action: Action, payload: Payload, source: int,
                   local_key: tuple[int, int], local_done: set[tuple[int, int]]) -> None:
        """Consume the received tensor, or the same rank's output when the stages share it."""
        state = self.states[rank]
        if source == rank:
            if local_key not in local_done:
                raise _fail(rank, step, f"{action} runs before the neighbouring stage on this "
                                        "rank produced its input")
            return
        wanted = (payload, action.microbatch, action.chunk)
        if wanted not in state.received:
            raise _fail(rank, step, f"{action} needs the {payload.value} from rank {source}, "
                                    "which no completed receive delivered")
        state.received.remove(wanted)

    # ------------------------------------------------------------------ communication

    def post(self, rank: int, step: int, ops: tuple[P2P, ...]) -> None:
        state = self.states[rank]
        state.posted = []
        for op in ops:
            if not 0 <= op.peer < self.schedule.p or op.peer == rank:
                raise _fail(rank, step, f"{op}: peer must be another pipeline rank")
            if op.op is Op.SEND:
                done = state.forwarded if op.payload is Payload.ACTIVATION else state.backwarded
                if (op.microbatch, op.chunk) not in done:
                    raise _fail(rank, step, f"{op}: the tensor has not been computed yet")
                channel, mine, theirs = (rank, op.peer), self.sends, self.recvs
            else:
                channel, mine, theirs = (op.peer, rank), self.recvs, self.sends
            index = len(mine[channel])
            mine[channel].append(_Posted(rank, step, op, state.clock))
            if index < len(theirs[channel]):
                self.check_pair(channel, index)
            state.posted.append((channel, index))

    def check_pair(self, channel: tuple[int, int], index: int) -> None:
        """The index-th send and receive on a channel meet: they must be the same tensor."""
        send, recv = self.sends[channel][index], self.recvs[channel][index]
        hop = 1 if send.op.payload is Payload.ACTIVATION else -1
        same = (send.op.payload is recv.op.payload and send.op.microbatch == recv.op.microbatch
                and self.schedule.stage(recv.rank, recv.op.chunk)
                == self.schedule.stage(send.rank, send.op.chunk) + hop)
        if not same:
            raise _fail(recv.rank, recv.step,
                        f"{recv.op} is matched with rank {send.rank} step {send.step}'s "
                        f"{send.op}: sends and receives between the two ranks disagree in order "
                        "or content")

    def try_complete(self, rank: int) -> bool:
        """Finish the rank's posted batch if every op has met its counterpart."""
        state = self.states[rank]
        finish = state.clock
        for channel, index in state.posted:
            mine_is_send = channel[0] == rank
            theirs = self.recvs[channel] if mine_is_send else self.sends[channel]
            if index >= len(theirs):
                return False
            finish = max(finish, theirs[index].time)
        for channel, index in state.posted:
            if channel[1] == rank:
                op = self.recvs[channel][index].op
                key = (op.payload, op.microbatch, op.chunk)
                if key in state.received:
                    raise _fail(rank, state.step, f"{op}: received twice")
                state.received.add(key)
        state.clock, state.posted = finish, None
        state.step += 1
        return True

    # ------------------------------------------------------------------ driver

    def advance(self, rank: int) -> bool:
        """Run the rank as far as it can go; True if it made any progress."""
        state, steps = self.states[rank], self.schedule.ranks[rank]
        progressed = False
        while state.step < len(steps):
            if state.posted is None:
                step = steps[state.step]
                if step.compute is not None:
                    self.compute(rank, state.step, step.compute)
                self.post(rank, state.step, step.comms)
                progressed = True
            if not self.try_complete(rank):
                break
            progressed = True
        return progressed

    def run(self) -> Timeline:
        p = self.schedule.p
        while any([self.advance(rank) for rank in range(p)]):
            pass
        blocked = [rank for rank, steps in enumerate(self.schedule.ranks)
                   if self.states[rank].step < len(steps)]
        if blocked:
            raise ScheduleError("deadlock: " + "; ".join(self.describe_wait(r) for r in blocked))
        self.check_complete()
        return Timeline(self.schedule, tuple(tuple(s.intervals) for s in self.states))

    def describe_wait(self, rank: int) -> str:
        state = self.states[rank]
        waits = []
        for channel, index in state.posted or []:
            mine_is_send = channel[0] == rank
            theirs = self.recvs[channel] if mine_is_send else self.sends[channel]
            if index >= len(theirs):
                mine = (self.sends if mine_is_send else self.recvs)[channel][index]
                waits.append(str(mine.op))
        return f"rank {rank} step {state.step} waits to {', '.join(waits)}"

    def check_complete(self) -> None:
        m, v = self.schedule.m, self.schedule.v
        everything = {(mb, chunk) for mb in range(m) for chunk in range(v)}
        for rank, state in enumerate(self.states):
            end = len(self.schedule.ranks[rank])
            for label, done in (("forwarded", state.forwarded), ("backwarded", state.backwarded)):
                missing = sorted(everything - done)
                if missing:
                    mb, chunk = missing[0]
                    raise _fail(rank, end, f"micro-batch {mb} chunk {chunk} never {label} "
                                           f"({len(missing)} missing)")
            if state.received:
                tensor, mb, chunk = sorted(state.received, key=str)[0]
                raise _fail(rank, end, f"{tensor.value} of micro-batch {mb} chunk {chunk} "
                                       "received but never used")


def simulate(schedule: Schedule, forward_time=1, backward_time=2) -> Timeline:
    """Execute `schedule` under the unit-time model; raises `ScheduleError` if it cannot run."""
    return _Simulator(schedule, forward_time, backward_time).run()


def validate(schedule: Schedule) -> None:
    """Raise `ScheduleError` unless every rank's steps run to completion, correctly."""
    simulate(schedule)


def bubble_fraction(schedule: Schedule, forward_time=1, backward_time=2) -> Fraction:
    """Pipeline bubble as the Megatron-LM paper defines it: bubble time over ideal time.

    Ideal time is one rank's compute, m * (tf + tb); bubble time is the rest of the makespan.
    That gives (p-1)/m for GPipe and 1F1B, (p-1)/(v*m) for interleaved. (Idle over *total*
    time, (p-1)/(m+p-1) for 1F1B, is `Timeline.idle_share`.)
    """
    timeline = simulate(schedule, forward_time, backward_time)
    ideal = max(timeline.busy(rank) for rank in range(schedule.p))
    return (timeline.makespan - ideal) / ideal


def peak_in_flight(schedule: Schedule) -> list[int]:
    """Per rank, the most (micro-batch, chunk) forwards whose backward has not yet run.

    Each holds its stashed activations. With v = 1 that is micro-batches (p - rank for 1F1B,
    m for GPipe); for interleaved each chunk holds 1/v of a stage, so memory is peak / v.
    """
    peaks = []
    for rank in range(schedule.p):
        in_flight = peak = 0
        for action in schedule.actions(rank):
            in_flight += 1 if action.kind is Kind.FORWARD else -1
            peak = max(peak, in_flight)
        peaks.append(peak)
    return peaks


def render_timeline(timeline: Timeline) -> str:
    """ASCII chart in the style of the paper's Figure 4: one row per rank, time to the right.

    A compute is drawn as its label (F or B, micro-batch, and chunk letter when v > 1) padded
    with '-' over its duration; '.' is idle time.
    """
    schedule = timeline.schedule
    intervals = [iv for row in timeline.ranks for iv in row]
    if not intervals:
        return ""
    lengths = [iv.end - iv.start for iv in intervals]
    quantum = Fraction(gcd(*(x.numerator for x in lengths)), lcm(*(x.denominator for x in lengths)))

    def label(action: Action) -> str:
        chunk = chr(ord("a") + action.chunk) if schedule.v > 1 else ""
        return f"{action.kind.value}{action.microbatch}{chunk}"

    width = max(len(label(iv.action)) for iv in intervals) + 1
    lines = [f"{schedule.name}: p={schedule.p} m={schedule.m} v={schedule.v}, one column = "
             f"{quantum} time unit(s), {width} characters"]
    for rank, row in enumerate(timeline.ranks):
        text, clock = "", Fraction(0)
        for iv in row:
            text += "." * int((iv.start - clock) / quantum * width)
            cells = int((iv.end - iv.start) / quantum * width)
            text += label(iv.action).ljust(cells - 1, "-") + "|"
            clock = iv.end
        text += "." * int((timeline.makespan - clock) / quantum * width)
        lines.append(f"rank {rank} |{text}")
    return "\n".join(lines)
