"""Ring groups (departments): turn a group and its members' presence into a ring plan.

A ring plan says which target rings from which second to which, relative to the moment the
dial starts, so sip-edge executes every strategy the same way (start/stop timers per leg) and
routing stays stateless. Strategies:

  all_at_once  every available member rings from 0 until the no-answer timeout;
  uniform      one at a time, longest idle first (spreads calls evenly), `step_seconds` each;
  sequential   one at a time in the configured order, `step_seconds` each;
  cascading    member i joins at i * step_seconds and keeps ringing until the timeout.

The no-answer timeout ends the plan early; members who would start after it are dropped.
Unavailable members (busy, do-not-disturb, unregistered) are skipped; a member routing has no
presence for counts as available, since losing a call is worse than one extra ring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class RingStrategy(StrEnum):
    ALL_AT_ONCE = "all_at_once"
    UNIFORM = "uniform"
    SEQUENTIAL = "sequential"
    CASCADING = "cascading"


class NoAnswerKind(StrEnum):
    VOICEMAIL = "voicemail"
    RING_GROUP = "ring_group"
    NUMBER = "number"
    MESSAGE = "message"
    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class NoAnswerAction:
    """What happens when nobody answers: a mailbox, another group, a number or a message."""

    kind: NoAnswerKind = NoAnswerKind.HANGUP
    target: str = ""  # mailbox, group name, number or prompt, by kind


@dataclass(frozen=True, slots=True)
class RingGroup:
    name: str
    members: tuple[str, ...]
    strategy: RingStrategy = RingStrategy.ALL_AT_ONCE
    step_seconds: int = 15
    no_answer_timeout: int = 60
    no_answer: NoAnswerAction = field(default_factory=NoAnswerAction)
    number: str | None = None  # short internal number of the department


@dataclass(frozen=True, slots=True)
class MemberState:
    available: bool = True
    idle_since: datetime | None = None  # end of the member's last call; None = no call yet


@dataclass(frozen=True, slots=True)
class RingLeg:
    target: str
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class RingPlan:
    strategy: str
    legs: tuple[RingLeg, ...]
    timeout: int  # seconds after the dial starts when the no-answer action runs
    skipped: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.legs

    def ringing_at(self, second: float) -> tuple[str, ...]:
        """Targets ringing `second` seconds into the plan (handy for reading plans)."""
        return tuple(leg.target for leg in self.legs if leg.start <= second < leg.stop)


def _idle_order(members: list[str], presence: Mapping[str, MemberState]) -> list[str]:
    def key(item: tuple[int, str]) -> tuple[int, float, int]:
        position, member = item
        idle_since = presence.get(member, MemberState()).idle_since
        # Never-called members first, then the oldest end of call; configured order last.
        if idle_since is None:
            return (0, 0.0, position)
        return (1, idle_since.timestamp(), position)

    return [member for _, member in sorted(enumerate(members), key=key)]


def plan_ring_group(group: RingGroup, presence: Mapping[str, MemberState]) -> RingPlan:
    if group.no_answer_timeout <= 0 or group.step_seconds <= 0:
        raise ValueError(f"ring group {group.name!r}: timeouts must be positive")
    available = [m for m in group.members if presence.get(m, MemberState()).available]
    skipped = tuple(m for m in group.members if m not in available)
    timeout = group.no_answer_timeout
    step = group.step_seconds
    legs: list[RingLeg] = []
    if group.strategy is RingStrategy.ALL_AT_ONCE:
        legs = [RingLeg(m, 0, timeout) for m in available]
    elif group.strategy in (RingStrategy.SEQUENTIAL, RingStrategy.UNIFORM):
        order = (
            _idle_order(available, presence)
            if group.strategy is RingStrategy.UNIFORM
            else available
        )
        for index, member in enumerate(order):
            start = index * step
            if start >= timeout:
                break
            legs.append(RingLeg(member, start, min(start + step, timeout)))
    else:
        for index, member in enumerate(available):
            start = index * step
            if start >= timeout:
                break
            legs.append(RingLeg(member, start, timeout))
    end = max((leg.stop for leg in legs), default=0)
    return RingPlan(group.strategy.value, tuple(legs), min(timeout, end), skipped)
