"""One RTP leg as a sans-I/O object (the aioquic shape: datagrams and ``now`` in; packets,
datagrams, timers and events out).

The leg owns: which remote address it talks to (symmetric RTP with bounded learning), the
statistics of what it receives (RFC 3550 A.1/A.3/A.8), continuity of what it sends (one SSRC,
monotonic sequence/timestamp across source switches), RTCP reports both ways, an inactivity
timeout and a MOS estimate. It never reads a clock or touches a socket.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from callmesh_media.rtp.learning import Address, LearningPolicy, RemoteAddressLearner
from callmesh_media.rtp.packet import RtpPacket, RtpParseError, is_rtcp
from callmesh_media.rtp.quality import QualityEstimate, estimate_quality
from callmesh_media.rtp.rewriter import OutboundStreamRewriter
from callmesh_media.rtp.rtcp import (
    RtcpBye,
    RtcpPacket,
    RtcpReceiverReport,
    RtcpReportBlock,
    RtcpSenderReport,
    RtcpSourceDescription,
    SdesChunk,
    SdesItemType,
    build_compound,
    ntp_middle_32,
    ntp_timestamp,
    parse_rtcp,
)
from callmesh_media.rtp.statistics import ReceptionStatistics

DEFAULT_INACTIVITY_TIMEOUT = 30.0
# RFC 3550's 5 s minimum suits a two-party leg's tiny RTCP bandwidth.
DEFAULT_RTCP_INTERVAL = 5.0
# How many SR send times we remember to match LSR echoes for round-trip time.
_SR_HISTORY = 8


@dataclass(frozen=True, slots=True)
class RemoteAddressLearned:
    address: Address


@dataclass(frozen=True, slots=True)
class RemoteSsrcChanged:
    previous: int | None
    current: int


@dataclass(frozen=True, slots=True)
class RtpTimedOut:
    """No RTP arrived for ``silent_for`` seconds (reported once per silent period)."""

    silent_for: float


@dataclass(frozen=True, slots=True)
class RemoteSaidBye:
    ssrcs: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class RemoteReport:
    """What the far end says about the stream we send it (a report block about our SSRC)."""

    fraction_lost: float
    packets_lost: int
    jitter_samples: int
    round_trip_time: float | None


@dataclass(frozen=True, slots=True)
class RtcpDue:
    """Time to send a report: call :meth:`RtpLeg.build_rtcp` and send it to the far end."""


LegEvent = (
    RemoteAddressLearned | RemoteSsrcChanged | RtpTimedOut | RemoteSaidBye | RemoteReport | RtcpDue
)


@dataclass(frozen=True, slots=True)
class LegStatistics:
    packets_received: int
    packets_expected: int
    packets_lost: int
    loss_fraction: float  # cumulative over the leg's current remote source
    jitter_ms: float
    packets_sent: int
    octets_sent: int
    dropped_foreign_source: int
    malformed_packets: int
    round_trip_time: float | None
    quality: QualityEstimate  # of what this leg receives
    # What the far end reports about the stream we send it (None until a report arrives).
    remote_fraction_lost: float | None
    remote_jitter_ms: float | None
    outbound_quality: QualityEstimate | None


class RtpLeg:
    def __init__(
        self,
        *,
        local_ssrc: int,
        signalled_address: Address,
        now: float,
        clock_rate: int = 8000,
        cname: str = "callmesh",
        learning: LearningPolicy | None = None,
        inactivity_timeout: float | None = DEFAULT_INACTIVITY_TIMEOUT,
        rtcp_interval: float | None = DEFAULT_RTCP_INTERVAL,
        rng: random.Random | None = None,
        initial_sequence: int = 0,
        initial_timestamp: int = 0,
    ) -> None:
        self.local_ssrc = local_ssrc
        self.clock_rate = clock_rate
        self.cname = cname
        self.learner = RemoteAddressLearner(signalled_address, learning)
        self.rewriter = OutboundStreamRewriter(
            local_ssrc, initial_sequence, initial_timestamp, clock_rate
        )
        self.inactivity_timeout = inactivity_timeout
        self.rtcp_interval = rtcp_interval
        # RFC 3550 §6.3.5: randomise each interval (x0.5..1.5) so legs started together do not
        # report in lock-step. Injected so tests are reproducible.
        self._rng = rng or random.Random()
        self._next_rtcp_at: float | None = (
            None if rtcp_interval is None else now + self._randomised(rtcp_interval) / 2
        )
        self._remote_report: RemoteReport | None = None
        self.remote_ssrc: int | None = None
        self._reception: ReceptionStatistics | None = None
        self._events: deque[LegEvent] = deque()
        self._last_received = now  # the timeout also covers "never started"
        self._timed_out = False
        self.malformed_packets = 0
        self.packets_sent = 0
        self.octets_sent = 0
        self._sent_since_report = False
        self._last_rtp_timestamp_sent = initial_timestamp
        self._last_sent_at = now
        self._last_sr_received: tuple[int, float] | None = None  # (LSR value, when)
        self._sr_sent_at: dict[int, float] = {}
        self.round_trip_time: float | None = None

    # -- receiving -------------------------------------------------------------------------

    @property
    def remote_address(self) -> Address:
        """Where to send: the learned address, or the signalled one until something arrives."""
        return self.learner.remote

    def resignal(self, signalled_address: Address) -> None:
        """A new offer/answer changed the far end's ``c=``/``m=``: learn afresh."""
        self.learner.resignal(signalled_address)

    def receive_datagram(self, data: bytes, source: Address, now: float) -> RtpPacket | None:
        """Take one datagram from the RTP port; return the RTP packet if it is ours to use.

        RTCP multiplexed on the same port (RFC 5761) is consumed here and returns None.
        Only well-formed RTP teaches the leg an address: garbage and RTCP never move it.
        """
        if is_rtcp(data):
            if self.learner.matches(source):
                self._receive_rtcp(data, now)
            else:
                self.learner.dropped_packets += 1
            return None
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self.malformed_packets += 1
            return None
        was_learned = self.learner.learned
        previous_remote = self.learner.remote
        if not self.learner.accept(source, now):
            return None
        if self.learner.remote != previous_remote or (self.learner.learned and not was_learned):
            self._events.append(RemoteAddressLearned(self.learner.remote))
        self._last_received = now
        self._timed_out = False
        if packet.ssrc != self.remote_ssrc:
            self._events.append(RemoteSsrcChanged(self.remote_ssrc, packet.ssrc))
            self.remote_ssrc = packet.ssrc
            # A.1: a new source starts on probation; its first packet is the base.
            self._reception = ReceptionStatistics(
                packet.ssrc, packet.sequence_number, self.clock_rate
            )
        assert self._reception is not None
        self._reception.update(packet.sequence_number, packet.timestamp, now)
        return packet

    def note_relayed(self, last_received_at: float) -> None:
        """RTP was taken in by a fast path that fed :attr:`reception` directly.

        That path calls ``reception.update`` per packet and reports only the arrival time of
        its latest packet here, now and then, which is all the inactivity timer needs.
        """
        if last_received_at > self._last_received:
            self._last_received = last_received_at
            self._timed_out = False

    @property
    def reception(self) -> ReceptionStatistics | None:
        """Statistics of the current remote source (None before its first packet)."""
        return self._reception

    def note_sent(self, packets: int, octets: int, last_timestamp: int, now: float) -> None:
        """Account for packets a fast path sent on this leg's behalf (for SR counts)."""
        if packets <= 0:
            return
        self.packets_sent += packets
        self.octets_sent += octets
        self._sent_since_report = True
        self._last_rtp_timestamp_sent = last_timestamp
        self._last_sent_at = now

    def receive_rtcp_datagram(self, data: bytes, source: Address, now: float) -> None:
        """RTCP on its own port: accepted only from the learned/signalled RTP IP."""
        if source[0] != self.learner.remote[0]:
            self.learner.dropped_packets += 1
            return
        self._receive_rtcp(data, now)

    def _receive_rtcp(self, data: bytes, now: float) -> None:
        try:
            packets = parse_rtcp(data)
        except RtpParseError:
            self.malformed_packets += 1
            return
        for packet in packets:
            self._handle_rtcp_packet(packet, now)

    def _handle_rtcp_packet(self, packet: RtcpPacket, now: float) -> None:
        if isinstance(packet, RtcpSenderReport):
            self._last_sr_received = (ntp_middle_32(packet.ntp_timestamp), now)
            self._handle_report_blocks(packet.reports, now)
        elif isinstance(packet, RtcpReceiverReport):
            self._handle_report_blocks(packet.reports, now)
        elif isinstance(packet, RtcpBye):
            self._events.append(
                RemoteSaidBye(tuple(packet.sources), packet.reason.decode("utf-8", "replace"))
            )

    def _handle_report_blocks(self, blocks: list[RtcpReportBlock], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.local_ssrc:
                continue
            sent_at = self._sr_sent_at.get(block.last_sr) if block.last_sr else None
            if sent_at is not None:
                # RFC 3550 §6.4.1: RTT = arrival - LSR - DLSR, computed on our own clock.
                rtt = now - sent_at - block.delay_since_last_sr / 65536.0
                if rtt >= 0:
                    self.round_trip_time = rtt
            report = RemoteReport(
                fraction_lost=block.fraction_lost / 256.0,
                packets_lost=block.packets_lost,
                jitter_samples=block.jitter,
                round_trip_time=self.round_trip_time,
            )
            self._remote_report = report
            self._events.append(report)

    # -- sending ---------------------------------------------------------------------------

    def switch_source(self) -> None:
        """The leg is about to be fed from somewhere else (new bridge peer, prompt, mix)."""
        self.rewriter.switch_source()

    def prepare_outgoing(self, packet: RtpPacket, now: float) -> bytes | None:
        """Re-stamp a packet from any source as ours and serialise it for ``remote_address``."""
        out = self.rewriter.rewrite(packet, now)
        if out is None:
            return None
        data = bytes(out)
        self.packets_sent += 1
        self.octets_sent += len(out.payload)
        self._sent_since_report = True
        self._last_rtp_timestamp_sent = out.timestamp
        self._last_sent_at = now
        return data

    def build_rtcp(self, now: float, wallclock: float) -> bytes:
        """A compound report: SR if we sent media since the last report, else RR; then SDES.

        ``wallclock`` is Unix time, used only for the NTP field peers expect in an SR.
        """
        blocks: list[RtcpReportBlock] = []
        if self._reception is not None and self._reception.valid:
            if self._last_sr_received is not None:
                lsr, received_at = self._last_sr_received
                dlsr = int((now - received_at) * 65536) & 0xFFFFFFFF
            else:
                lsr, dlsr = 0, 0
            blocks.append(self._reception.report_block(lsr, dlsr))
        report: RtcpPacket
        if self._sent_since_report:
            ntp = ntp_timestamp(wallclock)
            # The RTP timestamp that corresponds to this NTP instant (RFC 3550 §6.4.1).
            elapsed = now - self._last_sent_at
            rtp_ts = (self._last_rtp_timestamp_sent + round(elapsed * self.clock_rate)) % 2**32
            report = RtcpSenderReport(
                ssrc=self.local_ssrc,
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_ts,
                packet_count=self.packets_sent & 0xFFFFFFFF,
                octet_count=self.octets_sent & 0xFFFFFFFF,
                reports=blocks,
            )
            self._sr_sent_at[ntp_middle_32(ntp)] = now
            while len(self._sr_sent_at) > _SR_HISTORY:
                del self._sr_sent_at[next(iter(self._sr_sent_at))]
        else:
            report = RtcpReceiverReport(ssrc=self.local_ssrc, reports=blocks)
        self._sent_since_report = False
        sdes = RtcpSourceDescription(
            [SdesChunk(self.local_ssrc, [(SdesItemType.CNAME, self.cname.encode())])]
        )
        return build_compound([report, sdes])

    def build_bye(self, reason: str = "") -> bytes:
        sdes = RtcpSourceDescription(
            [SdesChunk(self.local_ssrc, [(SdesItemType.CNAME, self.cname.encode())])]
        )
        report = RtcpReceiverReport(ssrc=self.local_ssrc)
        return build_compound([report, sdes, RtcpBye([self.local_ssrc], reason.encode())])

    # -- timers and events -----------------------------------------------------------------

    def _randomised(self, interval: float) -> float:
        return interval * self._rng.uniform(0.5, 1.5)

    def _inactivity_deadline(self) -> float | None:
        if self.inactivity_timeout is None or self._timed_out:
            return None
        return self._last_received + self.inactivity_timeout

    def get_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has something to do, or None."""
        deadlines = [t for t in (self._inactivity_deadline(), self._next_rtcp_at) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        deadline = self._inactivity_deadline()
        if deadline is not None and now >= deadline:
            self._timed_out = True
            self._events.append(RtpTimedOut(silent_for=now - self._last_received))
        if self._next_rtcp_at is not None and now >= self._next_rtcp_at:
            assert self.rtcp_interval is not None
            self._next_rtcp_at = now + self._randomised(self.rtcp_interval)
            self._events.append(RtcpDue())

    def next_event(self) -> LegEvent | None:
        return self._events.popleft() if self._events else None

    # -- reporting -------------------------------------------------------------------------

    def statistics(self) -> LegStatistics:
        received = expected = lost = 0
        jitter_ms = 0.0
        if self._reception is not None:
            received = self._reception.received
            expected = max(0, self._reception.expected) if self._reception.valid else 0
            lost = max(0, self._reception.lost) if self._reception.valid else 0
            jitter_ms = 1000.0 * self._reception.jitter / self.clock_rate
        loss_fraction = lost / expected if expected else 0.0
        one_way_ms = 1000.0 * self.round_trip_time / 2 if self.round_trip_time else 0.0
        remote_fraction_lost: float | None = None
        remote_jitter_ms: float | None = None
        outbound_quality: QualityEstimate | None = None
        if self._remote_report is not None:
            remote_fraction_lost = self._remote_report.fraction_lost
            remote_jitter_ms = 1000.0 * self._remote_report.jitter_samples / self.clock_rate
            outbound_quality = estimate_quality(one_way_ms, remote_fraction_lost, remote_jitter_ms)
        return LegStatistics(
            packets_received=received,
            packets_expected=expected,
            packets_lost=lost,
            loss_fraction=loss_fraction,
            jitter_ms=jitter_ms,
            packets_sent=self.packets_sent,
            octets_sent=self.octets_sent,
            dropped_foreign_source=self.learner.dropped_packets,
            malformed_packets=self.malformed_packets,
            round_trip_time=self.round_trip_time,
            quality=estimate_quality(one_way_ms, loss_fraction, jitter_ms),
            remote_fraction_lost=remote_fraction_lost,
            remote_jitter_ms=remote_jitter_ms,
            outbound_quality=outbound_quality,
        )
