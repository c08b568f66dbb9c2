"""A jitter buffer for the paths that decode (mixing, recording, detection), driven by ``now``.

The consumer calls :meth:`JitterBuffer.pop` once per frame period (its own 20 ms tick) and
gets a frame, or ``None`` while the buffer is (re)filling. Packets are ordered by extended
sequence number; each packet is one frame (``frame_samples`` long), which is how every G.711
sender we meet packetises. The buffer never decodes: concealment hands back the previous
payload again (a crude but effective G.711 PLC for a frame or two), then signals silence.

Delay is measured, not guessed. For each packet, ``transit = arrival - sequence * frame``;
the smallest transit in the recent window is the fastest path, and a packet ``d`` seconds
slower than that needs ``d`` of buffering. The adaptive target is the 95th percentile of that
extra delay (clamped to ``[min_delay, max_delay]``), so occasional spikes are covered and the
rest of the time the buffer stays short. The buffer moves towards its target in whole frames,
which a frame-based mixer can do without resampling:

* grow: when playing earlier than the target, or when the next packet is missing and nothing
  later has arrived (more likely late than lost), conceal one frame without advancing;
* shrink: when playing more than two frames later than the target, drop one frame.

With ``adaptive=False`` the playout point is fixed at ``target_delay`` after the first packet.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from callmesh_media.rtp.packet import MAX_SEQUENCE, RtpPacket


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    sequence: int  # extended sequence number this frame stands for
    payload: bytes | None  # None: play silence
    concealed: bool  # True when payload is a repeat or silence in place of a real packet
    packet: RtpPacket | None


@dataclass(slots=True)
class JitterBufferStats:
    pushed: int = 0
    played: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    dropped_for_delay: int = 0
    overflow_resets: int = 0


class JitterBuffer:
    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        frame_samples: int = 160,
        target_delay: float = 0.06,
        adaptive: bool = True,
        min_delay: float = 0.02,
        max_delay: float = 0.3,
        max_repeats: int = 2,
        capacity_frames: int = 100,
        window_packets: int = 250,
    ) -> None:
        self.clock_rate = clock_rate
        self.frame_time = frame_samples / clock_rate
        self.adaptive = adaptive
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_repeats = max_repeats
        self.capacity_frames = capacity_frames
        self.stats = JitterBufferStats()
        self._fixed_target = target_delay
        self._adaptive_target = min_delay
        self._transits: deque[float] = deque(maxlen=window_packets)
        self._pushes_since_estimate = 0
        self._fastest_transit = float("inf")
        self._packets: dict[int, RtpPacket] = {}
        self._highest: int | None = None  # extended sequence of the newest packet seen
        self._next: int | None = None  # extended sequence to play next
        self._floor: int | None = None  # packets below this arrived too late
        self._playout_start: float | None = None
        self._last_payload: bytes | None = None
        self._missing_run = 0
        self._gap_start = 0
        self._previous_transit: float | None = None
        self.jitter = 0.0  # seconds, the RFC 3550 A.8 estimator, for reporting

    @property
    def target_delay(self) -> float:
        return self._adaptive_target if self.adaptive else self._fixed_target

    @property
    def buffered_frames(self) -> int:
        return len(self._packets)

    def _extend(self, sequence: int) -> int:
        if self._highest is None:
            return sequence + MAX_SEQUENCE  # room below for packets that arrive reordered
        delta = (sequence - self._highest) % MAX_SEQUENCE
        if delta >= MAX_SEQUENCE // 2:
            delta -= MAX_SEQUENCE
        return self._highest + delta

    def push(self, packet: RtpPacket, now: float) -> None:
        self.stats.pushed += 1
        extended = self._extend(packet.sequence_number)
        self._measure(extended, now)
        if self._floor is not None and extended < self._floor:
            self.stats.late += 1  # its turn has passed: played, concealed or skipped
            return
        if extended in self._packets:
            self.stats.duplicates += 1
            return
        if self._next is not None and abs(extended - self._next) >= self.capacity_frames:
            # Far from the playout point: the source restarted or jumped. Start over.
            self.stats.overflow_resets += 1
            self._packets.clear()
            self._transits.clear()
            self._fastest_transit = now - extended * self.frame_time
            self._transits.append(self._fastest_transit)
            self._highest = extended
            self._next = self._floor = None
            self._playout_start = None
        self._packets[extended] = packet
        if self._highest is None or extended > self._highest:
            self._highest = extended
        if self._playout_start is None:
            # Filling (first packet, after a pause, after a reset); the buffer is empty then,
            # so this packet is the first to play.
            self._next = extended
            self._playout_start = now + self.target_delay
        elif not self._started(now) and self._next is not None and extended < self._next:
            self._next = extended  # an earlier packet overtook while we were still filling

    def _started(self, now: float) -> bool:
        return self._playout_start is not None and now >= self._playout_start

    def _measure(self, extended: int, now: float) -> None:
        transit = now - extended * self.frame_time
        if self._previous_transit is not None:
            d = abs(transit - self._previous_transit)
            if d < 10.0:
                self.jitter += (d - self.jitter) / 16.0
        self._previous_transit = transit
        self._transits.append(transit)
        # The window's minimum is refreshed every few packets (it only matters to a frame's
        # precision); between refreshes a new faster packet still lowers it at once.
        self._fastest_transit = min(self._fastest_transit, transit)
        self._pushes_since_estimate += 1
        if self._pushes_since_estimate >= 10:
            self._pushes_since_estimate = 0
            ordered = sorted(self._transits)
            self._fastest_transit = ordered[0]
            p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] - ordered[0]
            self._adaptive_target = min(self.max_delay, max(self.min_delay, p95))

    def _current_delay(self, sequence: int, now: float) -> float:
        """How much later than the fastest possible arrival we would play ``sequence``."""
        return now - sequence * self.frame_time - self._fastest_transit

    def pop(self, now: float) -> PlayoutFrame | None:
        """The frame to play at this tick, or None while filling (the caller plays silence)."""
        if self._next is None or not self._started(now):
            return None
        sequence = self._next
        if self.adaptive and self._transits:
            delay = self._current_delay(sequence, now)
            if (
                delay > self.target_delay + 2 * self.frame_time
                and sequence in self._packets
                and sequence + 1 in self._packets
            ):
                del self._packets[sequence]
                self._advance(sequence)
                self.stats.dropped_for_delay += 1
                sequence += 1
            elif delay + self.frame_time <= self.target_delay and self._missing_run == 0:
                # Too early for the target: stretch by one concealed frame.
                self.stats.concealed += 1
                return PlayoutFrame(sequence, self._last_payload, True, None)
        packet = self._packets.pop(sequence, None)
        if packet is not None:
            self._advance(sequence)
            self._last_payload = packet.payload
            self._missing_run = 0
            self.stats.played += 1
            return PlayoutFrame(sequence, packet.payload, False, packet)
        self._missing_run += 1
        if self._missing_run == 1:
            self._gap_start = sequence
        if not self._packets and self._missing_run > self.max_repeats:
            # Nothing at all for a while: the sender paused (DTX, hold) or stalled. RTP
            # sequence numbers do not advance while a sender is silent, so go back to the
            # first missing number and refill before playing again.
            self._playout_start = None
            self._next = self._floor = self._gap_start
            self._missing_run = 0
            return None
        self.stats.concealed += 1
        if self._packets or not self.adaptive:
            # Something later is here, so this one is lost: move on. (A fixed-delay buffer
            # always moves on, keeping its delay.)
            self._advance(sequence)
        # else: nothing later yet, so it is more likely late than lost. Conceal without
        # advancing; the playout point slips one frame, which is how the delay grows.
        payload = self._last_payload if self._missing_run <= self.max_repeats else None
        return PlayoutFrame(sequence, payload, True, None)

    def _advance(self, played: int) -> None:
        self._next = played + 1
        self._floor = played + 1
