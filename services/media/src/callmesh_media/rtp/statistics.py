"""Receive-side statistics for one RTP source (RFC 3550 Appendix A.1, A.3, A.8).

Sequence numbers are 16 bits and wrap every 21 minutes at 50 packets/s, so the extended
sequence number (cycles << 16 | seq) is what loss is counted on.
"""

from __future__ import annotations

from dataclasses import dataclass

from callmesh_media.rtp.packet import MAX_SEQUENCE
from callmesh_media.rtp.rtcp import RtcpReportBlock

MAX_DROPOUT = 3000
MAX_MISORDER = 100
MIN_SEQUENTIAL = 2


@dataclass(frozen=True, slots=True)
class ReceptionSnapshot:
    ssrc: int
    packets_received: int
    packets_expected: int
    packets_lost: int  # cumulative; can be negative when duplicates arrive
    fraction_lost: float  # over the last report interval, 0..1
    jitter_samples: float
    extended_highest_sequence: int


class ReceptionStatistics:
    """RFC 3550 A.1 source validation plus A.3 loss and A.8 jitter for one SSRC."""

    def __init__(self, ssrc: int, first_sequence: int, clock_rate: int) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._max_seq = first_sequence
        self._bad_seq = MAX_SEQUENCE + 1  # "no bad sequence seen"
        self._cycles = 0
        self._base_seq = first_sequence
        # A new source must be seen in sequence MIN_SEQUENTIAL times before it counts, so a
        # stray packet does not reset statistics (A.1 "probation").
        self._probation = MIN_SEQUENTIAL
        self._max_seq = (first_sequence - 1) % MAX_SEQUENCE
        self.received = 0
        self.duplicates_or_old = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._last_fraction = 0.0
        self._transit: float | None = None
        self.jitter = 0.0  # in timestamp units, as RTCP carries it

    @property
    def valid(self) -> bool:
        return self._probation == 0

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max_seq

    def _restart(self, seq: int) -> None:
        self._base_seq = seq
        self._max_seq = seq
        self._bad_seq = MAX_SEQUENCE + 1
        self._cycles = 0
        self.received = 0
        self._received_prior = 0
        self._expected_prior = 0

    def update(self, sequence: int, timestamp: int, arrival: float) -> bool:
        """Account for one packet; False means it should be discarded (A.1 said invalid)."""
        udelta = (sequence - self._max_seq) % MAX_SEQUENCE
        if self._probation:
            if sequence == (self._max_seq + 1) % MAX_SEQUENCE:
                self._probation -= 1
                self._max_seq = sequence
                if self._probation == 0:
                    self._restart(sequence)
                    self.received += 1
                    self._update_jitter(timestamp, arrival)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max_seq = sequence
            return False
        if udelta < MAX_DROPOUT:
            if sequence < self._max_seq:
                self._cycles += MAX_SEQUENCE  # wrapped
            self._max_seq = sequence
        elif udelta <= MAX_SEQUENCE - MAX_MISORDER:
            # A very large jump: either the source restarted or this is garbage. Two in a row
            # means restart (A.1), one alone is dropped.
            if sequence == self._bad_seq:
                self._restart(sequence)
            else:
                self._bad_seq = (sequence + 1) % MAX_SEQUENCE
                return False
        else:
            # Duplicate or reordered packet within the misorder window: counted, not news.
            self.duplicates_or_old += 1
        self.received += 1
        self._update_jitter(timestamp, arrival)
        return True

    def _update_jitter(self, timestamp: int, arrival: float) -> None:
        # A.8: transit difference in timestamp units, smoothed with gain 1/16.
        arrival_units = arrival * self.clock_rate
        transit = arrival_units - timestamp
        if self._transit is not None:
            d = transit - self._transit
            # Timestamps wrap at 2**32; a difference near the wrap is really small.
            d = (d + 2**31) % 2**32 - 2**31
            self.jitter += (abs(d) - self.jitter) / 16.0
        self._transit = transit

    @property
    def expected(self) -> int:
        return self.extended_max - self._base_seq + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    def close_interval(self) -> float:
        """Fraction lost since the previous call (A.3), as a report interval ends."""
        expected_interval = self.expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = self.expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            self._last_fraction = 0.0
        else:
            self._last_fraction = lost_interval / expected_interval
        return self._last_fraction

    def snapshot(self) -> ReceptionSnapshot:
        return ReceptionSnapshot(
            ssrc=self.ssrc,
            packets_received=self.received,
            packets_expected=max(0, self.expected),
            packets_lost=self.lost,
            fraction_lost=self._last_fraction,
            jitter_samples=self.jitter,
            extended_highest_sequence=self.extended_max,
        )

    def report_block(self, last_sr: int, delay_since_last_sr: int) -> RtcpReportBlock:
        fraction = self.close_interval()
        return RtcpReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(255, int(fraction * 256)),
            packets_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=int(self.jitter),
            last_sr=last_sr,
            delay_since_last_sr=delay_since_last_sr,
        )
