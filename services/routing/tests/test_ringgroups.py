from __future__ import annotations

from datetime import UTC, datetime

import pytest
from callmesh_routing.core.ringgroups import (
    MemberState,
    RingGroup,
    RingLeg,
    RingStrategy,
    plan_ring_group,
)

MEMBERS = ("101", "102", "103")


def group(strategy: RingStrategy, timeout: int = 60, step: int = 15) -> RingGroup:
    return RingGroup("sales", MEMBERS, strategy, step_seconds=step, no_answer_timeout=timeout)


def at(hour: int) -> datetime:
    return datetime(2026, 11, 23, hour, tzinfo=UTC)


@pytest.mark.parametrize(
    ("strategy", "timeout", "step", "legs", "plan_timeout"),
    [
        (
            RingStrategy.ALL_AT_ONCE,
            30,
            15,
            [("101", 0, 30), ("102", 0, 30), ("103", 0, 30)],
            30,
        ),
        (
            RingStrategy.SEQUENTIAL,
            60,
            15,
            [("101", 0, 15), ("102", 15, 30), ("103", 30, 45)],
            45,  # everyone tried before the timeout: no-answer comes early
        ),
        (
            RingStrategy.SEQUENTIAL,
            40,
            15,
            [("101", 0, 15), ("102", 15, 30), ("103", 30, 40)],  # the last leg is cut short
            40,
        ),
        (
            RingStrategy.SEQUENTIAL,
            20,
            15,
            [("101", 0, 15), ("102", 15, 20)],  # 103 would start after the timeout
            20,
        ),
        (
            RingStrategy.CASCADING,
            60,
            10,
            [("101", 0, 60), ("102", 10, 60), ("103", 20, 60)],
            60,
        ),
        (
            RingStrategy.CASCADING,
            15,
            10,
            [("101", 0, 15), ("102", 10, 15)],
            15,
        ),
    ],
)
def test_strategies_produce_ring_plans(
    strategy: RingStrategy,
    timeout: int,
    step: int,
    legs: list[tuple[str, int, int]],
    plan_timeout: int,
) -> None:
    plan = plan_ring_group(group(strategy, timeout, step), {})
    assert plan.legs == tuple(RingLeg(*leg) for leg in legs)
    assert plan.timeout == plan_timeout
    assert plan.strategy == strategy.value


def test_cascading_keeps_earlier_members_ringing() -> None:
    plan = plan_ring_group(group(RingStrategy.CASCADING, 60, 10), {})
    assert plan.ringing_at(5) == ("101",)
    assert plan.ringing_at(15) == ("101", "102")
    assert plan.ringing_at(25) == ("101", "102", "103")
    assert plan.ringing_at(60) == ()


def test_sequential_rings_one_at_a_time() -> None:
    plan = plan_ring_group(group(RingStrategy.SEQUENTIAL), {})
    for second in range(45):
        assert len(plan.ringing_at(second)) == 1


def test_uniform_rings_longest_idle_first() -> None:
    presence = {
        "101": MemberState(idle_since=at(11)),
        "102": MemberState(idle_since=at(9)),  # idle the longest among those with calls
        "103": MemberState(idle_since=at(10)),
    }
    plan = plan_ring_group(group(RingStrategy.UNIFORM), presence)
    assert [leg.target for leg in plan.legs] == ["102", "103", "101"]
    assert plan.legs[0] == RingLeg("102", 0, 15)


def test_uniform_puts_members_without_calls_first_in_configured_order() -> None:
    presence = {"101": MemberState(idle_since=at(8))}
    plan = plan_ring_group(group(RingStrategy.UNIFORM), presence)
    assert [leg.target for leg in plan.legs] == ["102", "103", "101"]


@pytest.mark.parametrize("strategy", list(RingStrategy))
def test_unavailable_members_are_skipped(strategy: RingStrategy) -> None:
    presence = {"102": MemberState(available=False)}
    plan = plan_ring_group(group(strategy), presence)
    assert "102" not in [leg.target for leg in plan.legs]
    assert plan.skipped == ("102",)
    assert plan.legs[0].start == 0


@pytest.mark.parametrize("strategy", list(RingStrategy))
def test_nobody_available_gives_an_empty_plan(strategy: RingStrategy) -> None:
    presence = {m: MemberState(available=False) for m in MEMBERS}
    plan = plan_ring_group(group(strategy), presence)
    assert plan.is_empty
    assert plan.timeout == 0


def test_bad_timeouts_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_ring_group(group(RingStrategy.ALL_AT_ONCE, timeout=0), {})
