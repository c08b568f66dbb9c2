"""Outbound stream continuity: one SSRC, monotonic sequence and timestamp per leg.

A leg's audio comes from different places over its life: the bridged peer, a prompt, music on
hold, a conference mix, then another peer after a transfer. Each source has its own SSRC,
sequence and timestamp base. Forwarding those raw would make the far end see a new stream
(SSRC change) or a jump it counts as massive loss, so everything leaving a leg is re-stamped:
our SSRC, a sequence that continues by one at each source switch, and a timestamp that
advances by the wall-clock time elapsed since the previous packet (as if we had been silent),
but never by less than one packet's duration, so the new source does not overlap the audio
the previous packet already covered.
Within one source, sequence and timestamp *differences* are kept, so the far end still sees
the upstream loss and timing as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from callmesh_media.rtp.packet import MAX_SEQUENCE, MAX_TIMESTAMP, RtpPacket

# A jump larger than this within one source is treated as a restart of that source.
_MAX_SEQUENCE_JUMP = 3000
# Packets of the source we just switched away from are late stragglers for this long.
_STALE_SOURCE_SECONDS = 1.0


@dataclass(slots=True)
class _SourceMapping:
    source_ssrc: int
    sequence_offset: int
    timestamp_offset: int
    first_sequence_in: int
    highest_sequence_in: int


class OutboundStreamRewriter:
    def __init__(
        self, ssrc: int, initial_sequence: int, initial_timestamp: int, clock_rate: int = 8000
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        # The "previous packet" of a fresh stream, so the first real packet is initial+0.
        self._last_sequence = (initial_sequence - 1) % MAX_SEQUENCE
        self._last_timestamp = initial_timestamp % MAX_TIMESTAMP
        self._last_sent_at: float | None = None
        # Media time one packet covers (timestamp step between consecutive packets), so a new
        # source never starts inside the previous packet's audio.
        self._packet_duration = 0
        self._mapping: _SourceMapping | None = None
        self._previous_source: int | None = None
        self._switched_at = 0.0
        self.source_switches = 0
        self.dropped_stale = 0

    def switch_source(self) -> None:
        """Force the next packet to start a new mapping (e.g. a prompt replaces the peer).

        The caller decides what feeds the leg from now on, so no packet is treated as a
        straggler: straggler protection is for SSRC changes that happen on their own.
        """
        self._mapping = None
        self._previous_source = None

    def start_external_mapping(self, packet: RtpPacket, now: float) -> tuple[int, int]:
        """Begin a new source that a caller re-stamps itself: (sequence, timestamp) offsets.

        The relay fast path adds these offsets to raw header fields without building packet
        objects; it must report where it got to with :meth:`note_external_sent` before anything
        else (a prompt, another source) is sent through this rewriter.
        """
        self._mapping = None
        self._previous_source = None
        mapping = self._start_mapping(packet, now)
        self._mapping = None  # the caller owns this mapping; our next rewrite starts afresh
        return mapping.sequence_offset, mapping.timestamp_offset

    def note_external_sent(self, sequence: int, timestamp: int, now: float) -> None:
        """The last packet the external mapping sent, so the next source continues after it."""
        self._last_sequence = sequence % MAX_SEQUENCE
        self._last_timestamp = timestamp % MAX_TIMESTAMP
        self._last_sent_at = now

    def rewrite(self, packet: RtpPacket, now: float) -> RtpPacket | None:
        """Re-stamp one packet for sending; None if it is a stale packet of an old source."""
        mapping = self._mapping
        if (
            packet.ssrc == self._previous_source
            and (mapping is None or mapping.source_ssrc != packet.ssrc)
            and now - self._switched_at < _STALE_SOURCE_SECONDS
        ):
            # A straggler of the source we switched away from: sending it would jump back.
            self.dropped_stale += 1
            return None
        if mapping is not None and packet.ssrc == mapping.source_ssrc:
            delta = (packet.sequence_number - mapping.highest_sequence_in) % MAX_SEQUENCE
            if delta >= MAX_SEQUENCE // 2:
                # Reordered within the source. Older than the first packet we mapped would
                # land on sequence numbers already used by the previous source: drop it.
                if (packet.sequence_number - mapping.first_sequence_in) % MAX_SEQUENCE >= (
                    MAX_SEQUENCE // 2
                ):
                    self.dropped_stale += 1
                    return None
            elif delta > _MAX_SEQUENCE_JUMP:
                mapping = None
            else:
                mapping.highest_sequence_in = packet.sequence_number
        else:
            mapping = None
        starts_new_source = mapping is None
        if mapping is None:
            mapping = self._start_mapping(packet, now)
        out = RtpPacket(
            payload_type=packet.payload_type,
            sequence_number=(packet.sequence_number + mapping.sequence_offset) % MAX_SEQUENCE,
            timestamp=(packet.timestamp + mapping.timestamp_offset) % MAX_TIMESTAMP,
            ssrc=self.ssrc,
            payload=packet.payload,
            # The marker tells the far end's jitter buffer a new talkspurt starts here.
            marker=packet.marker or starts_new_source,
            csrc=list(packet.csrc),
            extension=packet.extension,
            padding_size=packet.padding_size,
        )
        if (out.sequence_number - self._last_sequence) % MAX_SEQUENCE < MAX_SEQUENCE // 2:
            if (out.sequence_number - self._last_sequence) % MAX_SEQUENCE == 1:
                step = (out.timestamp - self._last_timestamp) % MAX_TIMESTAMP
                if 0 < step < self.clock_rate:  # a plausible packet duration (< 1 s)
                    self._packet_duration = step
            self._last_sequence = out.sequence_number
            self._last_timestamp = out.timestamp
            self._last_sent_at = now
        return out

    def _start_mapping(self, packet: RtpPacket, now: float) -> _SourceMapping:
        if self._mapping is not None and self._mapping.source_ssrc != packet.ssrc:
            self._previous_source = self._mapping.source_ssrc
            self._switched_at = now
        if self._last_sent_at is not None:
            self.source_switches += 1
        next_sequence = (self._last_sequence + 1) % MAX_SEQUENCE
        if self._last_sent_at is None:
            next_timestamp = self._last_timestamp
        else:
            elapsed = round((now - self._last_sent_at) * self.clock_rate)
            advance = max(1, self._packet_duration, elapsed)
            next_timestamp = (self._last_timestamp + advance) % MAX_TIMESTAMP
        mapping = _SourceMapping(
            source_ssrc=packet.ssrc,
            sequence_offset=(next_sequence - packet.sequence_number) % MAX_SEQUENCE,
            timestamp_offset=(next_timestamp - packet.timestamp) % MAX_TIMESTAMP,
            first_sequence_in=packet.sequence_number,
            highest_sequence_in=packet.sequence_number,
        )
        self._mapping = mapping
        return mapping
