"""A jitter buffer for the paths that decode (mixing, recording, detection), driven by ``now``.

The consumer calls :meth:`JitterBuffer.pop` once per frame period (its own 20 ms tick) and
always gets either a frame or ``None`` while the buffer is still filling. Packets are ordered
by extended sequence number. The buffer never decodes: concealment hands back the previous
payload again (a crude but effective G.711 PLC for a frame or two) and then signals silence.

Delay adapts in whole frames, which is what a frame-based mixer can do without resampling:

* grow: when the next packet is missing *and nothing later is buffered*, the packet is more
  likely late than lost, so we conceal without advancing — the playout point slips one frame;
* shrink: when more than ``target + 2`` frames are buffered (hysteresis), one frame is dropped.

The target follows the measured interarrival jitter (RFC 3550 A.8): frame + 4 x jitter,
clamped to ``[min_delay, max_delay]``; with ``adaptive=False`` it stays at ``target_delay``.
"""

from __future__ import annotations

from dataclasses import dataclass

from callmesh_media.rtp.packet import MAX_SEQUENCE, RtpPacket


@dataclass(frozen=True, slots=True)
class PlayoutFrame:
    sequence: int  # extended sequence number this frame stands for
    payload: bytes | None  # None: play silence
    concealed: bool  # True when payload is a repeat or silence in place of a missing packet
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
    ) -> None:
        self.clock_rate = clock_rate
        self.frame_time = frame_samples / clock_rate
        self.adaptive = adaptive
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.max_repeats = max_repeats
        self.capacity_frames = capacity_frames
        self._fixed_target = target_delay
        self.stats = JitterBufferStats()
        self._packets: dict[int, RtpPacket] = {}
        self._highest: int | None = None  # extended sequence of the newest packet seen
        self._next: int | None = None  # extended sequence to play next
        self._floor: int | None = None  # packets below this arrived too late
        self._playout_start: float | None = None
        self._last_payload: bytes | None = None
        self._missing_run = 0
        self._transit: float | None = None
        self.jitter = 0.0  # seconds, RFC 3550 A.8 estimator

    @property
    def target_delay(self) -> float:
        if not self.adaptive:
            return self._fixed_target
        wanted = self.frame_time + 4.0 * self.jitter
        return min(self.max_delay, max(self.min_delay, wanted))

    @property
    def buffered_frames(self) -> int:
        return len(self._packets)

    def _extend(self, sequence: int) -> int:
        if self._highest is None:
            return sequence + MAX_SEQUENCE  # room below for reordered early packets
        delta = (sequence - self._highest) % MAX_SEQUENCE
        if delta >= MAX_SEQUENCE // 2:
            delta -= MAX_SEQUENCE
        return self._highest + delta

    def push(self, packet: RtpPacket, now: float) -> None:
        self.stats.pushed += 1
        extended = self._extend(packet.sequence_number)
        self._update_jitter(packet.timestamp, now)
        if self._floor is not None and extended < self._floor:
            self.stats.late += 1  # its turn has passed: played, concealed or skipped
            return
        if extended in self._packets:
            self.stats.duplicates += 1
            return
        if self._next is not None and extended - self._next >= self.capacity_frames:
            # Far ahead of the playout point: the source restarted or jumped. Start over.
            self.stats.overflow_resets += 1
            self._packets.clear()
            self._next = None
            self._playout_start = None
        self._packets[extended] = packet
        if self._highest is None or extended > self._highest:
            self._highest = extended
        if self._playout_start is None:
            # Filling (first packet, or after the source paused): start the clock now.
            self._next = extended
            self._playout_start = now + self.target_delay
        elif not self._started(now) and self._next is not None and extended < self._next:
            self._next = extended  # an earlier packet overtook while we were still filling

    def _started(self, now: float) -> bool:
        return self._playout_start is not None and now >= self._playout_start

    def _update_jitter(self, timestamp: int, now: float) -> None:
        transit = now - timestamp / self.clock_rate
        if self._transit is not None:
            d = transit - self._transit
            # Timestamp wrap (2**32 units) shows up as a huge difference; skip that one.
            if abs(d) < 10.0:
                self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    def pop(self, now: float) -> PlayoutFrame | None:
        """The frame to play at this tick, or None while filling (the caller plays silence)."""
        if self._next is None or not self._started(now):
            return None
        if self.adaptive:
            self._shrink_if_too_deep()
        sequence = self._next
        packet = self._packets.pop(sequence, None)
        if packet is not None:
            self._advance(sequence)
            self._last_payload = packet.payload
            self._missing_run = 0
            self.stats.played += 1
            return PlayoutFrame(sequence, packet.payload, False, packet)
        self._missing_run += 1
        if not self._packets and self._missing_run > self.max_repeats:
            # Nothing at all for a while: the source paused (DTX, hold) or stalled. RTP
            # sequence numbers do not advance while a sender is silent, so wait for the next
            # packet and refill before playing again rather than running ahead of it.
            self._playout_start = None
            self._next = sequence
            return None
        self.stats.concealed += 1
        if self._packets or not self.adaptive:
            # A later packet is here, so this one is lost: move on. (A fixed-delay buffer
            # always moves on, keeping its delay.)
            self._advance(sequence)
        # else: nothing later yet, so it is more likely late than lost. Repeat without
        # advancing; the playout point slips one frame, which is how the delay grows.
        payload = self._last_payload if self._missing_run <= self.max_repeats else None
        return PlayoutFrame(sequence, payload, True, None)

    def _advance(self, played: int) -> None:
        self._next = played + 1
        self._floor = played + 1

    def _shrink_if_too_deep(self) -> None:
        assert self._next is not None
        if self._highest is None:
            return
        depth_frames = self._highest - self._next + 1
        target_frames = max(1, round(self.target_delay / self.frame_time))
        if depth_frames > target_frames + 2 and self._next in self._packets:
            del self._packets[self._next]
            self._advance(self._next)
            self.stats.dropped_for_delay += 1
