"""Distribution strategies (which free agents to ring, in what order and how) and caller
orderings (where a new caller stands in line), each a small class found through a registry.

A strategy only ever sees *free* agents (status available): paused, wrap-up, ringing, on-call
and logged-out agents are filtered out by the engine before a strategy is consulted, so no
strategy can offer them a call. Every strategy sorts by effective penalty first (member
penalty plus any missed-call penalty), so lower-penalty members are always reached first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from callmesh_queue.core.model import RingMode


@dataclass(frozen=True, slots=True)
class Candidate:
    """A free agent as one queue sees them."""

    agent_id: str
    penalty: int
    idle_since: float
    member_index: int
    skills: Mapping[str, int]
    score: float


@dataclass(frozen=True, slots=True)
class SelectionContext:
    required_skills: Mapping[str, int]
    member_count: int
    # Member index of the agent this queue last offered a call to (round-robin memory).
    last_offered_index: int | None
    round_robin_memory: bool
    cascade_step: float


@dataclass(frozen=True, slots=True)
class RingPlan:
    agent_ids: tuple[str, ...]
    mode: RingMode
    step: float = 0.0


class DistributionStrategy(ABC):
    name: ClassVar[str]

    def accepts(self, candidate: Candidate, required_skills: Mapping[str, int]) -> bool:
        """Whether this agent may take this caller at all (default: any member may)."""
        return True

    @abstractmethod
    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        """Order the (non-empty, accepted) candidates and say how to ring them.

        Must return at least one agent: the engine relies on it to make progress."""


class RingAll(DistributionStrategy):
    """Ring every free agent of the lowest penalty tier at once; first to answer wins."""

    name = "ring_all"

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        best = min(c.penalty for c in candidates)
        tier = sorted((c for c in candidates if c.penalty == best), key=lambda c: c.member_index)
        return RingPlan(tuple(c.agent_id for c in tier), RingMode.ALL_AT_ONCE)


class LongestIdle(DistributionStrategy):
    """Uniform load: the agent idle longest first, then the next on no answer."""

    name = "longest_idle"

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        ordered = sorted(candidates, key=lambda c: (c.penalty, c.idle_since, c.member_index))
        return RingPlan(tuple(c.agent_id for c in ordered), RingMode.ONE_AT_A_TIME)


class OneByOne(DistributionStrategy):
    """Members in their configured order, one at a time.

    With round-robin memory the order starts just after the member offered the previous
    call, so calls go round the team instead of always hitting the first member."""

    name = "one_by_one"

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        start = 0
        if context.round_robin_memory and context.last_offered_index is not None:
            start = context.last_offered_index + 1
        size = max(context.member_count, 1)
        ordered = sorted(
            candidates, key=lambda c: (c.penalty, (c.member_index - start) % size, c.agent_id)
        )
        return RingPlan(tuple(c.agent_id for c in ordered), RingMode.ONE_AT_A_TIME)


class Cascading(DistributionStrategy):
    """Members in configured order; each step adds the next agent while earlier ones keep
    ringing, until someone answers or everyone's ring timeout has run out."""

    name = "cascading"

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        ordered = sorted(candidates, key=lambda c: (c.penalty, c.member_index))
        return RingPlan(
            tuple(c.agent_id for c in ordered), RingMode.CASCADE, step=context.cascade_step
        )


class SkillsBased(DistributionStrategy):
    """Only agents holding every required skill at the required level or above; the best
    match (highest summed level over the required skills) first, longest idle among equals.

    A caller without required skills may be taken by any member (ordered by longest idle)."""

    name = "skills"

    def accepts(self, candidate: Candidate, required_skills: Mapping[str, int]) -> bool:
        return all(
            candidate.skills.get(skill, -1) >= level for skill, level in required_skills.items()
        )

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        required = context.required_skills

        def match(candidate: Candidate) -> int:
            return sum(candidate.skills.get(skill, 0) for skill in required)

        ordered = sorted(
            candidates, key=lambda c: (c.penalty, -match(c), c.idle_since, c.member_index)
        )
        return RingPlan(tuple(c.agent_id for c in ordered), RingMode.ONE_AT_A_TIME)


class EfficiencyFirst(DistributionStrategy):
    """Highest member score first (e.g. conversion rate: the best salesperson first)."""

    name = "efficiency"

    def plan(self, candidates: Sequence[Candidate], context: SelectionContext) -> RingPlan:
        ordered = sorted(
            candidates, key=lambda c: (c.penalty, -c.score, c.idle_since, c.member_index)
        )
        return RingPlan(tuple(c.agent_id for c in ordered), RingMode.ONE_AT_A_TIME)


class CallerOrdering(ABC):
    """Decides a new caller's priority class; the queue serves higher classes first and is
    first-come-first-served within a class (the engine keeps that invariant)."""

    name: ClassVar[str]

    @abstractmethod
    def priority_class(
        self, caller_number: str, requested: int | None, priority_callers: Mapping[str, int]
    ) -> int: ...


class FifoOrdering(CallerOrdering):
    """Strict first-come-first-served: every caller is in class 0."""

    name = "fifo"

    def priority_class(
        self, caller_number: str, requested: int | None, priority_callers: Mapping[str, int]
    ) -> int:
        return 0


class PriorityOrdering(CallerOrdering):
    """An explicit priority from routing wins; otherwise the queue's white list
    (caller number -> class); otherwise class 0."""

    name = "priority"

    def priority_class(
        self, caller_number: str, requested: int | None, priority_callers: Mapping[str, int]
    ) -> int:
        if requested is not None:
            return requested
        return priority_callers.get(caller_number, 0)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


NamedT = TypeVar("NamedT", bound=_Named)


class UnknownName(KeyError):
    pass


class Registry(Generic[NamedT]):
    """Name -> implementation. Built per engine (no process-wide registry to mutate)."""

    def __init__(self, items: Iterable[NamedT] = ()) -> None:
        self._by_name: dict[str, NamedT] = {}
        for item in items:
            self.register(item)

    def register(self, item: NamedT) -> None:
        if item.name in self._by_name:
            raise ValueError(f"{item.name!r} is already registered")
        self._by_name[item.name] = item

    def get(self, name: str) -> NamedT:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name))
            raise UnknownName(f"unknown name {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)


def builtin_strategies() -> Registry[DistributionStrategy]:
    return Registry(
        [RingAll(), LongestIdle(), OneByOne(), Cascading(), SkillsBased(), EfficiencyFirst()]
    )


def builtin_orderings() -> Registry[CallerOrdering]:
    return Registry([FifoOrdering(), PriorityOrdering()])
