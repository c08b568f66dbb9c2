"""What the engine asks the outside world to do. The adapters turn these into gRPC stream
messages, media requests, originate requests and Kafka events; the core never does I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from callmesh_queue.core.model import (
    AgentStatus,
    EntryKind,
    OverflowReason,
    OverflowTarget,
)


class CancelReason(enum.StrEnum):
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    NO_ANSWER = "no_answer"
    CALLER_LEFT = "caller_left"
    AGENT_UNAVAILABLE = "agent_unavailable"
    CALLBACK_REQUESTED = "callback_requested"
    OVERFLOW = "overflow"
    GAVE_UP = "gave_up"
    # The agent answered an offer the engine had already withdrawn: hang the agent leg up.
    STALE = "stale"


class GiveUpReason(enum.StrEnum):
    NO_AGENT_IN_TIME = "no_agent_in_time"
    CUSTOMER_UNREACHABLE = "customer_unreachable"


@dataclass(frozen=True, slots=True)
class OfferCall:
    """Ring these agents for this entry. For a callback the agent is called first."""

    queue_id: str
    call_id: str
    agent_ids: tuple[str, ...]
    kind: EntryKind
    caller_number: str
    ring_timeout: float


@dataclass(frozen=True, slots=True)
class CancelOffer:
    queue_id: str
    call_id: str
    agent_ids: tuple[str, ...]
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class ConnectCaller:
    """A live caller's offer was answered: bridge the caller to the agent."""

    queue_id: str
    call_id: str
    agent_id: str
    waited: float


@dataclass(frozen=True, slots=True)
class PlayAnnouncement:
    """Tell the caller their 1-based position and/or estimated wait in whole seconds.

    A field is None when that part is not due (or, for the wait, cannot be estimated
    because no agent is serving the queue)."""

    queue_id: str
    call_id: str
    position: int | None
    estimated_wait: int | None


@dataclass(frozen=True, slots=True)
class OverflowCall:
    """Take a waiting caller out of the queue and send them to the configured target."""

    queue_id: str
    call_id: str
    reason: OverflowReason
    target: OverflowTarget | None


@dataclass(frozen=True, slots=True)
class CallbackRegistered:
    """The caller's callback request is on file; they may hang up. Their place is kept."""

    queue_id: str
    call_id: str
    number: str
    position: int
    estimated_wait: int | None


@dataclass(frozen=True, slots=True)
class DialCustomer:
    """An agent answered a callback: now call the customer (attempt counts from 1)."""

    queue_id: str
    call_id: str
    agent_id: str
    number: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ApologizeAndOfferVoicemail:
    """The callback is given up: call the customer once more, apologise, offer voicemail."""

    queue_id: str
    call_id: str
    number: str
    reason: GiveUpReason


@dataclass(frozen=True, slots=True)
class AgentStateChanged:
    agent_id: str
    status: AgentStatus
    reason: str | None


Action = (
    OfferCall
    | CancelOffer
    | ConnectCaller
    | PlayAnnouncement
    | OverflowCall
    | CallbackRegistered
    | DialCustomer
    | ApologizeAndOfferVoicemail
    | AgentStateChanged
)
