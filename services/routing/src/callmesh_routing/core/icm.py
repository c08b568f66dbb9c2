"""ICM: connect a repeat caller to the employee who last talked with them.

Candidates come from ordered sources: routing's own history (a projection of
`callmesh.calls.v1`, see `CallHistory`) and, when configured, the CRM's responsible manager.
Every source answers from memory: the CRM adapter awaits `Crm.LookupResponsible` (with its
deadline) *before* the engine runs and hands the answer in as a `PrefetchedSource`, so the
decision itself never blocks on I/O. The first source that yields a usable candidate wins;
within one source the most recent conversation wins.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from .masks import Mask, MaskMatcher
from .ringgroups import MemberState


@dataclass(frozen=True, slots=True)
class IcmCandidate:
    employee: str  # extension
    talked_at: datetime
    source: str


class IcmSource(Protocol):
    """Anything that can name employees who talked with a caller (E.164) since a moment."""

    @property
    def name(self) -> str: ...

    def candidates(self, caller: str, since: datetime) -> Sequence[IcmCandidate]: ...


class CallHistory:
    """Routing's own contact history: the last few employees per caller, oldest first.

    Fed by the Kafka consumer with answered calls; bounded per caller because only the
    most recent conversations matter. Recording the same (caller, employee, moment) twice is
    harmless, since consumers see redeliveries.
    """

    def __init__(self, per_caller: int = 8, name: str = "history") -> None:
        self._per_caller = per_caller
        self._name = name
        self._by_caller: dict[str, list[tuple[datetime, str]]] = {}

    @property
    def name(self) -> str:
        return self._name

    def record(self, caller: str, employee: str, talked_at: datetime) -> None:
        entries = self._by_caller.setdefault(caller, [])
        if (talked_at, employee) in entries:
            return
        entries.append((talked_at, employee))
        if len(entries) > 1 and entries[-2][0] > talked_at:
            # Events may arrive out of order across partitions; keep the list sorted.
            entries.sort()
        if len(entries) > self._per_caller:
            # Keep the most recent conversations, whatever order they arrived in.
            del entries[: len(entries) - self._per_caller]

    def candidates(self, caller: str, since: datetime) -> Sequence[IcmCandidate]:
        entries = self._by_caller.get(caller, ())
        return [
            IcmCandidate(employee, at, self._name)
            for at, employee in reversed(entries)
            if at >= since
        ]


@dataclass(frozen=True, slots=True)
class PrefetchedSource:
    """Answers fetched before the decision (e.g. the CRM's responsible manager)."""

    name: str
    answers: Mapping[str, tuple[IcmCandidate, ...]] = field(default_factory=dict)

    def candidates(self, caller: str, since: datetime) -> Sequence[IcmCandidate]:
        return [c for c in self.answers.get(caller, ()) if c.talked_at >= since]


class Availability(StrEnum):
    ONLY_IF_AVAILABLE = "only_if_available"  # busy/offline employee: go to the default
    ALWAYS = "always"  # ring even if busy (call waiting, or their mobile rings)


@dataclass(frozen=True, slots=True)
class IcmPolicy:
    window_days: int = 30
    availability: Availability = Availability.ONLY_IF_AVAILABLE
    also_mobile: bool = False  # ring the employee's mobile alongside their extension
    excluded_callers: tuple[str, ...] = ()  # masks of callers ICM must not apply to
    excluded_employees: tuple[str, ...] = ()  # e.g. the receptionist who answers everyone
    _excluded: MaskMatcher[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Compiled once with the policy, not per call; a bad mask fails loading here.
        matcher = MaskMatcher((Mask.parse(m), m) for m in self.excluded_callers)
        object.__setattr__(self, "_excluded", matcher)

    def excluded_by(self, caller_digits: str) -> str | None:
        hit = self._excluded.match(caller_digits)
        return hit.payload if hit is not None else None


@dataclass(frozen=True, slots=True)
class IcmDecision:
    employee: str | None
    targets: tuple[str, ...]
    talked_at: datetime | None
    source: str | None
    reason: str


def decide_icm(
    policy: IcmPolicy,
    caller: str,
    now: datetime,
    sources: Sequence[IcmSource],
    presence: Mapping[str, MemberState],
    mobiles: Mapping[str, str],
    known_employees: Container[str] | None = None,
) -> IcmDecision:
    """Pick the employee for `caller` (E.164) or say why nobody was picked."""
    digits = caller.removeprefix("+")
    excluded_by = policy.excluded_by(digits)
    if excluded_by is not None:
        return IcmDecision(None, (), None, None, f"ICM: caller excluded by {excluded_by!r}")
    since = now - timedelta(days=policy.window_days)
    excluded = set(policy.excluded_employees)
    passed_over: list[str] = []
    for source in sources:
        found = sorted(
            (c for c in source.candidates(caller, since) if c.talked_at >= since),
            key=lambda c: c.talked_at,
            reverse=True,
        )
        for candidate in found:
            if candidate.employee in excluded:
                passed_over.append(f"{candidate.employee} excluded")
                continue
            if known_employees is not None and candidate.employee not in known_employees:
                # History outlives staff: someone who left is no longer a target.
                passed_over.append(f"{candidate.employee} no longer exists")
                continue
            state = presence.get(candidate.employee, MemberState())
            mobile = mobiles.get(candidate.employee) if policy.also_mobile else None
            if not state.available and policy.availability is Availability.ONLY_IF_AVAILABLE:
                passed_over.append(f"{candidate.employee} unavailable")
                continue
            targets = (candidate.employee, mobile) if mobile else (candidate.employee,)
            when = candidate.talked_at.date().isoformat()
            reason = f"ICM: last talked to {candidate.employee} on {when} ({candidate.source})"
            return IcmDecision(
                candidate.employee, targets, candidate.talked_at, candidate.source, reason
            )
    detail = f"; passed over {', '.join(passed_over)}" if passed_over else ""
    reason = f"ICM: nobody talked with {caller} in the last {policy.window_days} days{detail}"
    return IcmDecision(None, (), None, None, reason)
