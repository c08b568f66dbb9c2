"""Follow-me: a user's devices and numbers tried in order, each step with its own timeout.

A step may ring several targets at once (desk phone and softphone); steps run one after the
other. Extensions without presence or marked unavailable are dropped; a step left empty takes
no time, so the caller never listens to ringing that cannot be answered. Outside numbers are
always considered reachable (routing cannot see a mobile's state).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .ringgroups import MemberState, RingLeg, RingPlan


@dataclass(frozen=True, slots=True)
class FollowMeEntry:
    targets: tuple[str, ...]
    ring_seconds: int = 20


@dataclass(frozen=True, slots=True)
class FollowMe:
    user: str
    steps: tuple[FollowMeEntry, ...]
    enabled: bool = True


def _is_outside_number(target: str) -> bool:
    return target.startswith("+")


def plan_follow_me(follow_me: FollowMe, presence: Mapping[str, MemberState]) -> RingPlan:
    legs: list[RingLeg] = []
    skipped: list[str] = []
    offset = 0
    for step in follow_me.steps:
        if step.ring_seconds <= 0:
            raise ValueError(f"follow-me of {follow_me.user}: ring_seconds must be positive")
        reachable = []
        for target in step.targets:
            if _is_outside_number(target) or presence.get(target, MemberState()).available:
                reachable.append(target)
            else:
                skipped.append(target)
        if not reachable:
            continue
        legs.extend(RingLeg(target, offset, offset + step.ring_seconds) for target in reachable)
        offset += step.ring_seconds
    return RingPlan("follow_me", tuple(legs), offset, tuple(skipped))
