"""RFC 4733 telephone-events: payload, a receiver that yields one digit per key press, and a
sender that produces the packet sequence for one digit.

On the wire one key press is many packets that all carry the same RTP timestamp (the event's
start): a first packet with the marker bit, updates with a growing duration, then the final
packet with the E bit sent three times. Any of them may be lost, duplicated or reordered, so
the receiver keys events by their timestamp, never by packet count.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from callmesh_media.rtp.packet import MAX_TIMESTAMP, RtpPacket, RtpParseError

EVENT_DIGITS = "0123456789*#ABCD"
FLASH_EVENT = 16
_PAYLOAD = struct.Struct("!BBH")
MAX_DURATION = 0xFFFF


def digit_to_event(digit: str) -> int:
    index = EVENT_DIGITS.find(digit.upper())
    if len(digit) != 1 or index < 0:
        raise ValueError(f"{digit!r} is not a DTMF digit")
    return index


def event_to_digit(event: int) -> str | None:
    return EVENT_DIGITS[event] if 0 <= event < len(EVENT_DIGITS) else None


@dataclass(frozen=True, slots=True)
class TelephoneEventPayload:
    event: int
    end: bool
    volume: int  # power level in -dBm0, 0..63
    duration: int  # in timestamp units since the event's start

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEventPayload:
        if len(payload) < 4:
            raise RtpParseError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def __bytes__(self) -> bytes:
        if not 0 <= self.volume <= 63:
            raise ValueError("volume must be 0..63 (-dBm0)")
        flags = (0x80 if self.end else 0) | self.volume
        return _PAYLOAD.pack(self.event, flags, min(self.duration, MAX_DURATION))


@dataclass(frozen=True, slots=True)
class TelephoneEventStarted:
    event: int
    digit: str | None
    timestamp: int


@dataclass(frozen=True, slots=True)
class TelephoneEventEnded:
    event: int
    digit: str | None
    timestamp: int
    duration: int  # timestamp units


TelephoneEventNotice = TelephoneEventStarted | TelephoneEventEnded


@dataclass(slots=True)
class _ActiveEvent:
    event: int
    timestamp: int
    duration: int
    ended: bool


def _ts_after(a: int, b: int) -> bool:
    """True if timestamp a is later than b, allowing for 32-bit wrap."""
    return 0 < (a - b) % MAX_TIMESTAMP < MAX_TIMESTAMP // 2


class TelephoneEventReceiver:
    """Turns telephone-event packets into exactly one Started (and at most one Ended) per press."""

    def __init__(self, memory: int = 32) -> None:
        self._current: _ActiveEvent | None = None
        # Timestamps of recent events: a late retransmission of an old end is recognised.
        self._seen: deque[int] = deque(maxlen=memory)
        self.malformed_packets = 0

    def receive(self, packet: RtpPacket) -> list[TelephoneEventNotice]:
        try:
            payload = TelephoneEventPayload.parse(packet.payload)
        except RtpParseError:
            self.malformed_packets += 1
            return []
        notices: list[TelephoneEventNotice] = []
        current = self._current
        ts = packet.timestamp
        if current is not None and ts == current.timestamp:
            if payload.event != current.event:
                return notices  # a different event cannot share a start; ignore the liar
            current.duration = max(current.duration, payload.duration)
            if payload.end and not current.ended:
                current.ended = True
                notices.append(self._ended(current))
            return notices
        if ts in self._seen:
            return notices  # retransmission of an older event
        if current is not None and not _ts_after(ts, current.timestamp):
            return notices  # reordered packet from before the current event
        if (
            current is not None
            and not current.ended
            and payload.event == current.event
            and not packet.marker
            and (ts - current.timestamp) % MAX_TIMESTAMP <= current.duration + 1
        ):
            # RFC 4733 §2.5.1.3: a long press is split into segments with new timestamps
            # (the duration field is only 16 bits). Same key, contiguous, no marker: same press.
            current.timestamp = ts
            current.duration = payload.duration
            self._seen.append(ts)
            if payload.end:
                current.ended = True
                notices.append(self._ended(current))
            return notices
        if current is not None and not current.ended:
            # Its end packets were all lost; close it with what we know.
            current.ended = True
            notices.append(self._ended(current))
        current = _ActiveEvent(payload.event, ts, payload.duration, payload.end)
        self._current = current
        self._seen.append(ts)
        notices.append(TelephoneEventStarted(payload.event, event_to_digit(payload.event), ts))
        if payload.end:
            notices.append(self._ended(current))
        return notices

    @staticmethod
    def _ended(event: _ActiveEvent) -> TelephoneEventEnded:
        return TelephoneEventEnded(
            event.event, event_to_digit(event.event), event.timestamp, event.duration
        )


@dataclass(frozen=True, slots=True)
class ScheduledPacket:
    send_offset: float  # seconds after the first packet of the event
    packet: RtpPacket


class TelephoneEventSender:
    """Produces the packets for one key press; the leg's rewriter re-stamps them on the way out."""

    def __init__(
        self,
        payload_type: int,
        ssrc: int,
        *,
        clock_rate: int = 8000,
        interval: float = 0.05,
        volume: int = 10,
        initial_sequence: int = 0,
        end_repeats: int = 3,
    ) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.interval = interval
        self.volume = volume
        self.end_repeats = end_repeats
        self._sequence = initial_sequence & 0xFFFF

    def _next_sequence(self) -> int:
        sequence = self._sequence
        self._sequence = (self._sequence + 1) & 0xFFFF
        return sequence

    def digit(self, digit: str, duration: float, timestamp: int) -> list[ScheduledPacket]:
        event = digit_to_event(digit)
        total = round(duration * self.clock_rate)
        if total <= 0:
            raise ValueError("a key press must last a positive time")
        if total > MAX_DURATION:
            raise ValueError("presses longer than 8.19 s need segmenting; not supported")
        step = max(1, round(self.interval * self.clock_rate))
        packets: list[ScheduledPacket] = []
        elapsed = 0
        first = True
        while elapsed < total:
            # Each update reports the duration up to the end of the interval it opens.
            covered = min(total, elapsed + step)
            payload = TelephoneEventPayload(event, False, self.volume, covered)
            packets.append(
                ScheduledPacket(
                    elapsed / self.clock_rate,
                    RtpPacket(
                        payload_type=self.payload_type,
                        sequence_number=self._next_sequence(),
                        timestamp=timestamp % MAX_TIMESTAMP,
                        ssrc=self.ssrc,
                        payload=bytes(payload),
                        marker=first,
                    ),
                )
            )
            first = False
            elapsed += step
        end_payload = bytes(TelephoneEventPayload(event, True, self.volume, total))
        for _ in range(self.end_repeats):
            # Same timestamp and duration, fresh sequence numbers (RFC 4733 §2.5.1.4).
            packets.append(
                ScheduledPacket(
                    total / self.clock_rate,
                    RtpPacket(
                        payload_type=self.payload_type,
                        sequence_number=self._next_sequence(),
                        timestamp=timestamp % MAX_TIMESTAMP,
                        ssrc=self.ssrc,
                        payload=end_payload,
                    ),
                )
            )
        return packets
