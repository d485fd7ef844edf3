"""Pipeline schedules as data: every builder's output runs, and its bubble and memory figures
equal the Megatron-LM paper's formulas; broken schedules are rejected with rank and step."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from itertools import pairwise

import pytest

from training.parallel.schedule_sim import (
    ScheduleError,
    bubble_fraction,
    peak_in_flight,
    render_timeline,
    simulate,
    validate,
)
from training.parallel.schedules import (
    P2P,
    Action,
    Kind,
    Op,
    Payload,
    Schedule,
    Step,
    build_schedule,
    gpipe,
    interleaved_one_f_one_b,
    one_f_one_b,
)

F, B = Kind.FORWARD, Kind.BACKWARD
ACT, GRAD = Payload.ACTIVATION, Payload.GRADIENT

PM = [(1, 1), (1, 4), (2, 1), (2, 4), (3, 5), (4, 4), (4, 8), (4, 16), (8, 3)]
PMV = [(1, 2, 2), (2, 2, 2), (2, 4, 2), (2, 8, 3), (3, 6, 2), (4, 4, 2), (4, 8, 2), (4, 8, 4)]
TIMES = [(1, 2), (1, 1), (2, 3)]


def with_rank(schedule: Schedule, rank: int, steps: list[Step]) -> Schedule:
    ranks = list(schedule.ranks)
    ranks[rank] = tuple(steps)
    return replace(schedule, ranks=tuple(ranks))


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("p,m", PM)
@pytest.mark.parametrize("builder", [gpipe, one_f_one_b])
@pytest.mark.parametrize("tf,tb", TIMES)
def test_bubble_of_gpipe_and_1f1b_is_p_minus_1_over_m(builder, p, m, tf, tb):
    assert bubble_fraction(builder(p, m), tf, tb) == Fraction(p - 1, m)


@pytest.mark.parametrize("p,m,v", PMV)
@pytest.mark.parametrize("tf,tb", TIMES)
def test_interleaved_bubble_is_p_minus_1_over_v_m(p, m, v, tf, tb):
    assert bubble_fraction(interleaved_one_f_one_b(p, m, v), tf, tb) == Fraction(p - 1, v * m)


def test_idle_share_is_idle_over_total_time():
    timeline = simulate(one_f_one_b(4, 8))
    assert timeline.makespan == (8 + 4 - 1) * 3
    assert [timeline.idle_share(rank) for rank in range(4)] == [Fraction(3, 11)] * 4


@pytest.mark.parametrize("p,m", PM)
def test_peak_in_flight_1f1b_is_p_minus_rank_and_gpipe_is_m(p, m):
    assert peak_in_flight(one_f_one_b(p, m)) == [min(p - rank, m) for rank in range(p)]
    assert peak_in_flight(gpipe(p, m)) == [m] * p


@pytest.mark.parametrize("p,m,v", PMV)
def test_peak_in_flight_interleaved_is_megatron_warmup_plus_one(p, m, v):
    expected = [min((p - rank - 1) * 2 + (v - 1) * p + 1, m * v) for rank in range(p)]
    assert peak_in_flight(interleaved_one_f_one_b(p, m, v)) == expected


# ----------------------------------------------------------------------------- structure


@pytest.mark.parametrize("p,m", PM)
def test_gpipe_and_1f1b_validate(p, m):
    validate(gpipe(p, m))
    validate(one_f_one_b(p, m))


@pytest.mark.parametrize("p,m,v", PMV)
def test_interleaved_validates_and_forwards_climb_the_global_stages(p, m, v):
    schedule = interleaved_one_f_one_b(p, m, v)
    timeline = simulate(schedule)
    for mb in range(m):
        forwards = sorted((iv.action.chunk * p + rank, iv.start, iv.end)
                          for rank, row in enumerate(timeline.ranks) for iv in row
                          if iv.action == Action(F, mb, iv.action.chunk))
        backwards = sorted((iv.action.chunk * p + rank, iv.start, iv.end)
                           for rank, row in enumerate(timeline.ranks) for iv in row
                           if iv.action == Action(B, mb, iv.action.chunk))
        assert [stage for stage, _, _ in forwards] == list(range(p * v))
        assert all(nxt[1] >= cur[2] for cur, nxt in pairwise(forwards))
        assert all(cur[1] >= nxt[2] for cur, nxt in pairwise(backwards))


def test_1f1b_warmup_steady_cooldown_on_each_rank():
    schedule = one_f_one_b(4, 6)
    assert [str(a) for a in schedule.actions(1)] == [
        "F0.0", "F1.0", "F2.0", "B0.0", "F3.0", "B1.0", "F4.0", "B2.0", "F5.0", "B3.0",
        "B4.0", "B5.0"]
    assert [a.kind for a in schedule.actions(3)] == [F, B] * 6


def test_1f1b_batches_each_send_with_the_next_compute_receive():
    rank1 = one_f_one_b(3, 3).ranks[1]
    assert rank1[:4] == (
        Step(None, (P2P(Op.RECV, 0, ACT, 0),)),
        Step(Action(F, 0), (P2P(Op.SEND, 2, ACT, 0), P2P(Op.RECV, 0, ACT, 1))),
        Step(Action(F, 1), (P2P(Op.SEND, 2, ACT, 1), P2P(Op.RECV, 2, GRAD, 0))),
        Step(Action(B, 0), (P2P(Op.SEND, 0, GRAD, 0), P2P(Op.RECV, 0, ACT, 2))),
    )


def test_interleaved_last_rank_feeds_rank_0_next_chunk():
    schedule = interleaved_one_f_one_b(2, 2, 2)
    last = [op for step in schedule.ranks[1] for op in step.sends if op.payload is ACT]
    first = [op for step in schedule.ranks[0] for op in step.recvs if op.payload is ACT]
    assert last == [P2P(Op.SEND, 0, ACT, 0, 0), P2P(Op.SEND, 0, ACT, 1, 0)]
    assert first == [P2P(Op.RECV, 1, ACT, 0, 1), P2P(Op.RECV, 1, ACT, 1, 1)]


def test_render_matches_the_hand_drawn_1f1b_timeline():
    # p=2, m=2, tf=1, tb=2: the last rank runs F0 B0 F1 B1 from t=1; rank 0 waits on gradients.
    assert render_timeline(simulate(one_f_one_b(2, 2))).splitlines()[1:] == [
        "rank 0 |F0|F1|......B0---|...B1---|",
        "rank 1 |...F0|B0---|F1|B1---|......",
    ]


def test_build_schedule_dispatches_on_the_config_name():
    assert build_schedule("1f1b", 2, 4) == one_f_one_b(2, 4)
    assert build_schedule("gpipe", 2, 4).name == "gpipe"
    assert build_schedule("interleaved", 2, 4, 2) == interleaved_one_f_one_b(2, 4, 2)
    with pytest.raises(ValueError, match="unknown pipeline schedule"):
        build_schedule("zero-bubble", 2, 4)
    with pytest.raises(ValueError, match="one model chunk per rank"):
        build_schedule("1f1b", 2, 4, 2)


# ----------------------------------------------------------------------------- bad configurations


@pytest.mark.parametrize("call,message", [
    (lambda: interleaved_one_f_one_b(4, 6, 2), "multiple of the pipeline size"),
    (lambda: interleaved_one_f_one_b(2, 4, 1), "v >= 2"),
    (lambda: one_f_one_b(2, 0), "micro-batches m must be >= 1"),
    (lambda: gpipe(0, 4), "pipeline size p must be >= 1"),
])
def test_invalid_configurations_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- broken schedules


def test_rejects_a_missing_receive():
    schedule = one_f_one_b(2, 2)
    assert schedule.ranks[1][0] == Step(None, (P2P(Op.RECV, 0, ACT, 0),))
    broken = with_rank(schedule, 1, [Step(None)] + list(schedule.ranks[1][1:]))
    with pytest.raises(ScheduleError, match=r"rank 1 step 1: F0\.0 needs the activation"):
        validate(broken)


def test_rejects_a_missing_send_as_a_deadlock_naming_the_waiting_receive():
    schedule = one_f_one_b(2, 1)
    steps = list(schedule.ranks[0])
    steps[0] = Step(steps[0].compute, steps[0].recvs)  # F0 no longer sends its activation
    with pytest.raises(ScheduleError, match="deadlock: .*rank 1 step 0 waits to recv activation"):
        validate(with_rank(schedule, 0, steps))


def test_rejects_a_backward_before_its_forward():
    steps = [Step(Action(B, 0)), Step(Action(F, 0)), Step(Action(F, 1)), Step(Action(B, 1))]
    with pytest.raises(ScheduleError, match="rank 0 step 0: B0.0: backward before its forward"):
        validate(Schedule("custom", 1, 2, 1, (tuple(steps),)))


def test_rejects_a_microbatch_forwarded_twice():
    steps = [Step(Action(F, 0)), Step(Action(F, 0)), Step(Action(B, 0))]
    with pytest.raises(ScheduleError, match="rank 0 step 1: F0.0: micro-batch forwarded twice"):
        validate(Schedule("custom", 1, 1, 1, (tuple(steps),)))


def test_rejects_work_left_undone():
    steps = [Step(Action(F, 0)), Step(Action(F, 1)), Step(Action(B, 0))]
    with pytest.raises(ScheduleError, match="micro-batch 1 chunk 0 never backwarded"):
        validate(Schedule("custom", 1, 2, 1, (tuple(steps),)))


def test_rejects_sends_posted_in_another_order_than_received():
    schedule = gpipe(2, 2)
    steps = list(schedule.ranks[0])
    send0, send1 = steps[0].sends + steps[1].sends
    steps[0] = Step(steps[0].compute)
    steps[1] = Step(steps[1].compute, (send1, send0))  # receiver expects 0 before 1
    with pytest.raises(ScheduleError, match="rank 1 step 0: recv activation of microbatch 0 "
                                            "chunk 0 from rank 0 is matched with rank 0 step 1"):
        validate(with_rank(schedule, 0, steps))


def unbatched_exchange(rank1_receives_first: bool) -> Schedule:
    """1F1B at p=2, m=2 with the neighbours' batched exchange split into blocking ops."""
    rank0 = [Step(Action(F, 0), (P2P(Op.SEND, 1, ACT, 0),)),
             Step(Action(F, 1)),
             Step(None, (P2P(Op.SEND, 1, ACT, 1),)),
             Step(None, (P2P(Op.RECV, 1, GRAD, 0),)),
             Step(Action(B, 0), (P2P(Op.RECV, 1, GRAD, 1),)),
             Step(Action(B, 1))]
    exchange = [Step(None, (P2P(Op.SEND, 0, GRAD, 0),)), Step(None, (P2P(Op.RECV, 0, ACT, 1),))]
    if rank1_receives_first:
        exchange.reverse()
    rank1 = [Step(None, (P2P(Op.RECV, 0, ACT, 0),)), Step(Action(F, 0)), Step(Action(B, 0)),
             *exchange, Step(Action(F, 1)), Step(Action(B, 1), (P2P(Op.SEND, 0, GRAD, 1),))]
    return Schedule("custom", 2, 2, 1, (tuple(rank0), tuple(rank1)))


def test_blocking_sends_on_both_sides_deadlock_and_swapping_one_side_fixes_it():
    with pytest.raises(ScheduleError, match="deadlock: rank 0 step 2 waits to send activation "
                                            ".*rank 1 step 3 waits to send gradient"):
        validate(unbatched_exchange(rank1_receives_first=False))
    validate(unbatched_exchange(rank1_receives_first=True))
