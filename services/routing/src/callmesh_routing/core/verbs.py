"""Verbs routing hands to sip-edge, and the results sip-edge hands back.

Plain dataclasses mirroring the Routing contract (ARCHITECTURE §4); the servicer maps them to
protobuf, so nothing here imports generated stubs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Answer:
    pass


@dataclass(frozen=True, slots=True)
class Play:
    prompt: str
    loop: int = 1
    barge_in: bool = False


@dataclass(frozen=True, slots=True)
class Gather:
    """Play `prompt` (interruptible by the first digit) and collect DTMF."""

    prompt: str
    max_digits: int = 1
    timeout: int = 5  # seconds of silence after the prompt before giving up
    inter_digit_timeout: int = 3
    terminators: str = "#"


class TargetKind(StrEnum):
    EXTENSION = "extension"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class DialLeg:
    """One target of a dial: rings from `start` to `stop` seconds after the dial starts."""

    target: str
    kind: TargetKind
    start: int
    stop: int
    trunks: tuple[str, ...] = ()  # outside numbers: trunks in failover order


@dataclass(frozen=True, slots=True)
class Dial:
    legs: tuple[DialLeg, ...]
    timeout: int
    strategy: str
    caller_id: str | None = None


@dataclass(frozen=True, slots=True)
class Queue:
    queue: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Voicemail:
    mailbox: str
    greeting: str | None = None


@dataclass(frozen=True, slots=True)
class CallbackRequest:
    number: str
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call; before answer `sip_status` is the final response sent."""

    cause: str
    sip_status: int = 480


Verb = Answer | Play | Gather | Dial | Queue | Voicemail | CallbackRequest | Hangup


# Results of verbs that produce one -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatherResult:
    digits: str  # empty when the caller pressed nothing before the timeout


class DialOutcome(StrEnum):
    ANSWERED = "answered"  # bridged and since ended
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # every leg/trunk failed


@dataclass(frozen=True, slots=True)
class DialResult:
    outcome: DialOutcome
    answered_by: str | None = None


class QueueOutcome(StrEnum):
    ANSWERED = "answered"
    TIMEOUT = "timeout"
    FULL = "full"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class QueueResult:
    outcome: QueueOutcome


@dataclass(frozen=True, slots=True)
class Completed:
    """A verb without a meaningful result finished (voicemail left, message played)."""


VerbResult = GatherResult | DialResult | QueueResult | Completed
