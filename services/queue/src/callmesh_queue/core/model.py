"""Queue definitions (configuration from the api) and the runtime records the engine keeps.

Configuration objects are frozen: a queue is reconfigured by handing the engine a new
`QueueConfig`, never by mutating one in place. Runtime records (`Agent`, `WaitingEntry`,
`Offer`) are mutable and owned by exactly one `QueueEngine`; nothing outside the engine
should change them (read them through the engine's query methods instead).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


class AgentStatus(enum.StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


# An agent in one of these states counts as "serving" a queue for wait estimates and for the
# "no agents" checks: they will take a call without anyone having to log in or unpause.
SERVING_STATUSES = frozenset(
    {AgentStatus.AVAILABLE, AgentStatus.RINGING, AgentStatus.ON_CALL, AgentStatus.WRAP_UP}
)


class EntryKind(enum.StrEnum):
    LIVE = "live"
    CALLBACK = "callback"


class OverflowKind(enum.StrEnum):
    QUEUE = "queue"
    NUMBER = "number"
    VOICEMAIL = "voicemail"
    MESSAGE = "message"


class OverflowReason(enum.StrEnum):
    QUEUE_FULL = "queue_full"
    NO_AGENTS = "no_agents"
    MAX_WAIT = "max_wait"
    PREDICTED_WAIT = "predicted_wait"


class NoAnswerPolicy(enum.StrEnum):
    """What happens to an agent who lets an offer ring out (or declines it)."""

    NONE = "none"
    PENALIZE = "penalize"  # stays available, but behind others for a while
    PAUSE = "pause"  # paused with reason "missed call" until they unpause


MISSED_CALL_PAUSE_REASON = "missed call"


@dataclass(frozen=True, slots=True)
class OverflowTarget:
    kind: OverflowKind
    destination: str = ""


@dataclass(frozen=True, slots=True)
class QueueMember:
    """An agent's membership in one queue.

    `penalty` is the member's priority in this queue: lower is offered first, and a
    higher-penalty member is only reached when no lower-penalty member can take the call.
    `skills` are this member's levels (higher is better) for skills-based routing; `score`
    is the efficiency figure (e.g. conversion rate) the efficiency-first strategy sorts by.
    """

    agent_id: str
    penalty: int = 0
    skills: Mapping[str, int] = field(default_factory=dict)
    score: float = 0.0


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and (math.isnan(value) or value < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One queue as the api defines it. Times are in seconds; `None` switches a limit off."""

    queue_id: str
    members: tuple[QueueMember, ...] = ()
    strategy: str = "ring_all"
    caller_order: str = "priority"
    # Tie-breaker between queues that share agents (see engine module docstring).
    weight: int = 0
    music: str = "default"
    ring_timeout: float = 15.0
    cascade_step: float = 5.0
    round_robin_memory: bool = True
    # Pause before an entry whose offer nobody took is offered again.
    retry_delay: float = 0.0
    no_answer_policy: NoAnswerPolicy = NoAnswerPolicy.PENALIZE
    missed_penalty: int = 1
    missed_penalty_seconds: float = 60.0
    position_announce_interval: float | None = 60.0
    wait_announce_interval: float | None = 120.0
    announce_on_join: bool = True
    announce_on_improvement: bool = True
    # Announcements triggered by a better position never come closer together than this.
    announce_min_gap: float = 15.0
    max_wait: float | None = None
    max_length: int | None = None
    reject_when_no_agents: bool = True
    leave_when_no_agents: bool = False
    overflow: OverflowTarget | None = None
    wrap_up_time: float = 0.0
    service_level_threshold: float = 20.0
    predicted_wait_threshold: float | None = None
    default_handle_time: float = 180.0
    handle_time_window: float = 86_400.0
    priority_callers: Mapping[str, int] = field(default_factory=dict)
    callbacks_enabled: bool = True
    callback_max_wait: float = 3_600.0
    callback_max_attempts: int = 3
    callback_retry_delay: float = 120.0

    def __post_init__(self) -> None:
        if not self.queue_id:
            raise ValueError("queue_id must not be empty")
        seen: set[str] = set()
        for member in self.members:
            if member.agent_id in seen:
                raise ValueError(f"agent {member.agent_id!r} is listed twice in {self.queue_id}")
            seen.add(member.agent_id)
        for name in (
            "ring_timeout",
            "cascade_step",
            "retry_delay",
            "missed_penalty_seconds",
            "announce_min_gap",
            "wrap_up_time",
            "service_level_threshold",
            "default_handle_time",
            "callback_max_wait",
            "callback_retry_delay",
            "max_wait",
            "predicted_wait_threshold",
        ):
            _check_non_negative(name, getattr(self, name))
        for name in ("position_announce_interval", "wait_announce_interval"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")
        if self.ring_timeout <= 0:
            raise ValueError("ring_timeout must be > 0")
        if self.handle_time_window <= 0:
            raise ValueError("handle_time_window must be > 0")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("max_length must be >= 1 or None")
        if self.callback_max_attempts < 1:
            raise ValueError("callback_max_attempts must be >= 1")

    def member(self, agent_id: str) -> QueueMember | None:
        for member in self.members:
            if member.agent_id == agent_id:
                return member
        return None


@dataclass(slots=True)
class ActiveCall:
    """The queue call an agent is on (answered live call or a callback in progress)."""

    queue_id: str
    call_id: str
    kind: EntryKind
    answered_at: float
    customer_connected: bool


@dataclass(slots=True)
class Agent:
    agent_id: str
    status: AgentStatus = AgentStatus.LOGGED_OUT
    pause_reason: str | None = None
    # A pause asked for while on a call or in wrap-up takes effect when that work ends.
    pending_pause_reason: str | None = None
    wrap_up_until: float | None = None
    # Start of the current idle spell: login, or the end of the last queue call + wrap-up.
    idle_since: float = 0.0
    missed_penalty: int = 0
    missed_penalty_until: float = 0.0
    ringing_for: str | None = None
    call: ActiveCall | None = None

    def penalty_boost(self, now: float) -> int:
        return self.missed_penalty if now < self.missed_penalty_until else 0


@dataclass(slots=True)
class WaitingEntry:
    """A caller (or a callback request) holding a place in one queue.

    The place is the pair (priority class, seq): `seq` is handed out once at join and never
    changes, so a callback that is retried goes back exactly where it was.
    """

    call_id: str
    queue_id: str
    caller_number: str
    joined_at: float
    seq: int
    priority: int
    required_skills: Mapping[str, int]
    kind: EntryKind = EntryKind.LIVE
    callback_number: str | None = None
    callback_requested_at: float | None = None
    callback_attempts: int = 0
    give_up_at: float | None = None
    # Not offered before this time (retry delay); None means ready.
    not_before: float | None = None
    offer_id: int | None = None
    # Agent who answered a callback while the customer is being dialled; the entry is out of
    # the queue order meanwhile and goes back to its place if the customer does not answer.
    dialing_agent: str | None = None
    max_wait_at: float | None = None
    next_position_at: float | None = None
    next_wait_at: float | None = None
    improvement_at: float | None = None
    announce_at: float | None = None
    last_announced_at: float | None = None
    last_position: int | None = None

    @property
    def place(self) -> tuple[int, int]:
        return (-self.priority, self.seq)

    @property
    def in_order(self) -> bool:
        return self.dialing_agent is None


class RingMode(enum.StrEnum):
    ALL_AT_ONCE = "all_at_once"
    ONE_AT_A_TIME = "one_at_a_time"
    CASCADE = "cascade"


@dataclass(slots=True)
class Offer:
    """Agents being rung for one entry. `ringing` maps agent id to its ring deadline."""

    offer_id: int
    call_id: str
    queue_id: str
    mode: RingMode
    step: float
    pending: list[str]
    ringing: dict[str, float]
    next_step_at: float | None = None
