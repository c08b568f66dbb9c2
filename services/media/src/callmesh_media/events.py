"""What media tells its subscribers (digits, playback and recording ends, timeouts, fax tones,
leg statistics), and the in-process bus that fans events out to ``Events`` streams by owner.

Events are not stored (the MediaControl contract): a subscriber receives what happens while it
is subscribed. Each subscriber has a bounded queue; a subscriber too slow to keep up loses its
oldest events rather than growing the process without bound, and the loss is counted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class LegStatsSnapshot:
    packets_received: int
    packets_sent: int
    packets_lost: int
    loss_fraction: float
    jitter_ms: float
    round_trip_ms: float | None
    mos: float
    remote_loss_fraction: float | None
    remote_jitter_ms: float | None
    codec: str | None
    bytes_received: int
    bytes_sent: int


@dataclass(frozen=True, slots=True)
class DigitReceived:
    digit: str
    duration: float
    source: str  # "rfc4733" or "inband"


@dataclass(frozen=True, slots=True)
class PlayFinished:
    play_id: str
    end: str  # completed, stopped, dtmf, max_duration, error
    digit: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class DigitsCollectedEvent:
    collect_id: str
    digits: str
    terminator: str
    end: str  # max_digits, terminator, no_input, inter_digit_timeout, cancelled


@dataclass(frozen=True, slots=True)
class RecordFinished:
    recording_id: str
    storage_uri: str
    duration: float
    size_bytes: int
    channels: int
    sample_rate_hz: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class RtpTimeoutEvent:
    silent_for: float


@dataclass(frozen=True, slots=True)
class FaxToneEvent:
    kind: str  # "CNG" or "CED"


@dataclass(frozen=True, slots=True)
class LegStatsEvent:
    stats: LegStatsSnapshot


@dataclass(frozen=True, slots=True)
class EndpointClosedEvent:
    reason: str
    stats: LegStatsSnapshot


EventPayload = (
    DigitReceived
    | PlayFinished
    | DigitsCollectedEvent
    | RecordFinished
    | RtpTimeoutEvent
    | FaxToneEvent
    | LegStatsEvent
    | EndpointClosedEvent
)


@dataclass(frozen=True, slots=True)
class MediaEventRecord:
    payload: EventPayload
    owner: str = ""
    endpoint_id: str = ""
    call_id: str = ""
    leg: str = ""
    occurred_at: float = field(default_factory=time.time)
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


class Subscription:
    def __init__(self, bus: EventBus, owner: str, capacity: int) -> None:
        self.bus = bus
        self.owner = owner
        self.queue: asyncio.Queue[MediaEventRecord] = asyncio.Queue(maxsize=capacity)
        self.dropped = 0

    def offer(self, event: MediaEventRecord) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def next(self) -> MediaEventRecord:
        return await self.queue.get()

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, owner: str) -> Subscription:
        """Events of endpoints created with ``owner`` (empty: every event)."""
        subscription = Subscription(self, owner, self.capacity)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, event: MediaEventRecord) -> None:
        for subscription in self._subscriptions:
            # Events that belong to no owner (a conference's recording) reach everyone.
            if not subscription.owner or not event.owner or subscription.owner == event.owner:
                subscription.offer(event)
