from __future__ import annotations

import pytest
from callmesh_routing.core.followme import FollowMe, FollowMeEntry, plan_follow_me
from callmesh_routing.core.ringgroups import MemberState, RingLeg

FOLLOW_ME = FollowMe(
    "101",
    (
        FollowMeEntry(("101",), 15),
        FollowMeEntry(("101-soft", "101-desk2"), 10),
        FollowMeEntry(("+79161234567",), 25),
    ),
)


@pytest.mark.parametrize(
    ("unavailable", "legs", "timeout"),
    [
        (
            set(),
            [
                ("101", 0, 15),
                ("101-soft", 15, 25),
                ("101-desk2", 15, 25),
                ("+79161234567", 25, 50),
            ],
            50,
        ),
        # An unreachable desk phone costs no time: the softphones ring at once.
        (
            {"101"},
            [("101-soft", 0, 10), ("101-desk2", 0, 10), ("+79161234567", 10, 35)],
            35,
        ),
        ({"101-soft"}, [("101", 0, 15), ("101-desk2", 15, 25), ("+79161234567", 25, 50)], 50),
        # The mobile is always tried: routing cannot see its state.
        ({"101", "101-soft", "101-desk2"}, [("+79161234567", 0, 25)], 25),
    ],
)
def test_follow_me_plan(
    unavailable: set[str], legs: list[tuple[str, int, int]], timeout: int
) -> None:
    presence = {target: MemberState(available=False) for target in unavailable}
    plan = plan_follow_me(FOLLOW_ME, presence)
    assert plan.legs == tuple(RingLeg(*leg) for leg in legs)
    assert plan.timeout == timeout
    assert set(plan.skipped) == unavailable


def test_zero_ring_time_is_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_follow_me(FollowMe("101", (FollowMeEntry(("101",), 0),)), {})
