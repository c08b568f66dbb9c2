"""Live figures per queue.

Service level (the formula the api reports):

    SL = answered_within_threshold / (answered + abandoned_after_threshold)

A caller who hangs up before the threshold is left out of both sides: the queue never had
a fair chance to answer them ("short abandon"). A caller who hangs up after the threshold
counts against the queue. Callers sent to overflow and callback requests are not part of
SL (callbacks have their own completed/failed counters): overflow is a routing decision,
and a callback caller chose not to wait live. SL is None until there is something to divide.
Counters accumulate until `reset_counters` (the adapter resets them per reporting period).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(slots=True)
class QueueCounters:
    answered: int = 0
    answered_within_threshold: int = 0
    abandoned: int = 0
    abandoned_after_threshold: int = 0
    overflowed: int = 0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    callbacks_failed: int = 0
    callbacks_cancelled: int = 0

    def record_answer(self, waited: float, threshold: float) -> None:
        self.answered += 1
        if waited <= threshold:
            self.answered_within_threshold += 1

    def record_abandon(self, waited: float, threshold: float) -> None:
        self.abandoned += 1
        if waited > threshold:
            self.abandoned_after_threshold += 1

    def service_level(self) -> float | None:
        denominator = self.answered + self.abandoned_after_threshold
        if denominator == 0:
            return None
        return self.answered_within_threshold / denominator

    def to_data(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_data(cls, data: dict[str, int]) -> QueueCounters:
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class QueueFigures:
    queue_id: str
    waiting: int  # live callers in line
    callbacks_waiting: int  # callback requests holding a place (incl. one being dialled)
    longest_wait: float  # seconds the longest-waiting live caller has waited (0 if none)
    available_agents: int
    serving_agents: int  # logged in and not paused
    answered: int
    answered_within_threshold: int
    abandoned: int
    abandoned_after_threshold: int
    overflowed: int
    service_level: float | None
    callbacks_completed: int
    callbacks_failed: int
    average_handle_time: float | None
    estimated_wait_new_caller: int | None
