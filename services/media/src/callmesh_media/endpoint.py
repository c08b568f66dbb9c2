"""One RTP endpoint as an asyncio datagram protocol, with the relay fast path.

The sans-I/O :class:`~callmesh_media.rtp.RtpLeg` decides what a datagram means (address
learning, statistics, RTCP); this adapter owns the sockets and moves packets.

Hot path. Once a leg has locked its remote address (the learning window is over) and nothing
needs its decoded audio (no recording, conference, in-band detection), a packet that comes from
that address, with the current SSRC and the negotiated audio payload type, is relayed without
building any object: five header fields are unpacked, the RFC 3550 reception statistics are
updated, sequence/timestamp/SSRC are re-stamped in a copy of the datagram with one
``pack_into`` (offsets computed when the source started), the payload is transcoded with one
``bytes.translate`` when the legs use different G.711 laws, and it is sent. Every other packet
(learning, foreign sources, telephone-events, new SSRCs, decoding legs) takes the slow path
through the full core.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from callmesh_media.dsp.dtmf import DtmfDetector
from callmesh_media.dsp.fax import FaxToneDetector
from callmesh_media.dsp.g711 import ALAW_TO_ULAW_TABLE, ULAW_TO_ALAW_TABLE, G711Codec
from callmesh_media.rtp import JitterBuffer, RtpLeg, RtpPacket, TelephoneEventReceiver, is_rtcp
from callmesh_media.rtp.learning import Address
from callmesh_media.sdp import AudioDescription

if TYPE_CHECKING:
    from callmesh_media.collect import DigitCollector

FRAME = 160
_HEADER = struct.Struct("!BBHII")
_RESTAMP = struct.Struct("!HII").pack_into
_MAX_JUMP = 3000
_TRANSCODE = {
    ("PCMU", "PCMA"): ULAW_TO_ALAW_TABLE.tobytes(),
    ("PCMA", "PCMU"): ALAW_TO_ULAW_TABLE.tobytes(),
}
Int16Array = npt.NDArray[np.int16]


class NoFreePort(Exception):
    pass


class PortAllocator:
    """Even RTP ports (RTCP on the odd one above) from a range, in rotation.

    Rotation (rather than always the lowest free port) keeps a just-released port unused for a
    while, so late packets of an old call do not land in a new one.
    """

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.low = low + (low % 2)
        self.high = high
        self._cursor = self.low
        self.in_use: set[int] = set()

    @property
    def pairs(self) -> int:
        return max(0, (self.high - self.low + 1) // 2)

    def allocate(self, with_rtcp: bool) -> tuple[socket.socket, socket.socket | None]:
        for _ in range(self.pairs):
            port = self._cursor
            self._cursor += 2
            if self._cursor + 1 > self.high:
                self._cursor = self.low
            if port in self.in_use:
                continue
            rtp = _bind(self.host, port)
            if rtp is None:
                continue
            rtcp: socket.socket | None = None
            if with_rtcp:
                rtcp = _bind(self.host, port + 1)
                if rtcp is None:
                    rtp.close()
                    continue
            self.in_use.add(port)
            return rtp, rtcp
        raise NoFreePort(
            f"no free RTP port pair in {self.low}-{self.high} on {self.host} "
            f"({len(self.in_use)} in use by this replica)"
        )

    def release(self, port: int) -> None:
        self.in_use.discard(port)


def _bind(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None
        raise
    return sock


class RelayDirection:
    """Where one endpoint's audio goes in a bridge, and how it is re-stamped on the way."""

    __slots__ = (
        "audio_payload_type",
        "highest_in",
        "last_at",
        "last_sequence_out",
        "last_timestamp_out",
        "octets",
        "out_ssrc",
        "packets",
        "payload_types",
        "sequence_offset",
        "source_ssrc",
        "table",
        "target",
        "timestamp_offset",
    )

    def __init__(self, target: Endpoint, source: Endpoint) -> None:
        self.target = target
        self.source_ssrc: int | None = None
        self.sequence_offset = 0
        self.timestamp_offset = 0
        self.highest_in = 0
        self.out_ssrc = target.leg.local_ssrc
        assert source.codec is not None and target.codec is not None
        self.table = _TRANSCODE.get((source.codec.name, target.codec.name))
        self.audio_payload_type = target.send_payload_type
        # What each incoming payload type becomes on the target leg.
        self.payload_types: dict[int, int] = {source.receive_payload_type: target.send_payload_type}
        if source.remote_te_payload_type is not None and target.remote_te_payload_type is not None:
            self.payload_types[source.remote_te_payload_type] = target.remote_te_payload_type
        self.packets = 0
        self.octets = 0
        self.last_sequence_out = 0
        self.last_timestamp_out = 0
        self.last_at = 0.0

    def forward(self, packet: RtpPacket, now: float) -> None:
        """Slow-path forwarding of a parsed packet (first of a source, events, odd headers)."""
        payload_type = self.payload_types.get(packet.payload_type)
        if payload_type is None:
            return
        if packet.ssrc != self.source_ssrc or self._jumped(packet.sequence_number):
            self.sequence_offset, self.timestamp_offset = (
                self.target.leg.rewriter.start_external_mapping(packet, now)
            )
            self.source_ssrc = packet.ssrc
            self.highest_in = packet.sequence_number
            marker = True
        else:
            if (packet.sequence_number - self.highest_in) & 0xFFFF < 0x8000:
                self.highest_in = packet.sequence_number
            marker = packet.marker
        payload = packet.payload
        if self.table is not None and payload_type == self.audio_payload_type:
            payload = payload.translate(self.table)
        out = RtpPacket(
            payload_type=payload_type,
            sequence_number=(packet.sequence_number + self.sequence_offset) & 0xFFFF,
            timestamp=(packet.timestamp + self.timestamp_offset) & 0xFFFFFFFF,
            ssrc=self.out_ssrc,
            payload=payload,
            marker=marker,
        )
        self.target.send_raw(bytes(out))
        self.packets += 1
        self.octets += len(payload)
        self.last_sequence_out = out.sequence_number
        self.last_timestamp_out = out.timestamp
        self.last_at = now

    def _jumped(self, sequence: int) -> bool:
        delta = (sequence - self.highest_in) & 0xFFFF
        return _MAX_JUMP < delta < 0x10000 - _MAX_JUMP

    def flush_counters(self) -> None:
        """Hand the sent counts to the target leg's SR bookkeeping."""
        self.target.leg.note_sent(self.packets, self.octets, self.last_timestamp_out, self.last_at)
        self.packets = self.octets = 0

    def detach(self) -> None:
        """Stop feeding the target: its next source continues after our last packet."""
        self.flush_counters()
        if self.source_ssrc is not None:
            self.target.leg.rewriter.note_external_sent(
                self.last_sequence_out, self.last_timestamp_out, self.last_at
            )
        self.target.leg.switch_source()


class Endpoint(asyncio.DatagramProtocol):
    """An RTP endpoint: socket(s), the sans-I/O leg, negotiation state and per-leg media state."""

    def __init__(
        self,
        *,
        endpoint_id: str,
        call_id: str,
        leg_label: str,
        tenant_id: str,
        owner: str,
        leg: RtpLeg,
        local_port: int,
        clock: Callable[[], float],
        on_slow_packet: Callable[[Endpoint, RtpPacket, float], None],
    ) -> None:
        self.endpoint_id = endpoint_id
        self.call_id = call_id
        self.leg_label = leg_label
        self.tenant_id = tenant_id
        self.owner = owner
        self.leg = leg
        self.local_port = local_port
        self._clock = clock
        self._on_slow_packet = on_slow_packet
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.rtcp_mux = False
        # Negotiation.
        self.codec: G711Codec | None = None
        self.receive_payload_type = -1  # audio PT the far end sends us
        self.send_payload_type = -1  # audio PT we send (the same number for static G.711)
        self.remote_te_payload_type: int | None = None
        self.remote: AudioDescription | None = None
        self.offered: tuple[tuple[int, str], ...] = ()
        self.offer_pending = False
        self.telephone_event_payload_type: int | None = None
        self.sdp_session_id = 0
        self.sdp_version = 0
        self.local_direction = "sendrecv"
        # Options.
        self.rtp_timeout: float | None = None
        self.inband_dtmf = False
        self.detect_fax = False
        self.stats_interval: float | None = None
        self.next_stats_at: float | None = None
        # Where our audio goes (None: nowhere) and what feeds us.
        self.relay: RelayDirection | None = None
        self.bridge_id: str | None = None
        self.peer: Endpoint | None = None
        self.conference_id: str | None = None
        self.playing = 0  # active playbacks feeding this endpoint
        self.recordings = 0  # recordings that need this endpoint's audio
        # Fast path state (None: every packet takes the slow path).
        self.fast_source: Address | None = None
        self.fast_ssrc = -1
        self.fast_payload_type = -1
        self._reception_update: Callable[[int, int, float], bool] | None = None
        self.last_rtp_at = 0.0
        self.bytes_received = 0
        # Decoding side.
        self.jitter: JitterBuffer | None = None
        self.dtmf_detector: DtmfDetector | None = None
        self.fax_detector: FaxToneDetector | None = None
        self.telephone_events = TelephoneEventReceiver()
        # An RFC 4733 press not ended yet: (digit, RTP timestamp, started, last packet at).
        self.pending_event: tuple[str, int, float, float] | None = None
        # Presses closed by timeout: a late end packet of one of them is not a new digit.
        self.closed_events: deque[int] = deque(maxlen=8)
        self.inbound_frame: Int16Array | None = None  # decoded this tick
        self.outbound_frame: Int16Array | None = None  # generated for it this tick
        self.generator_ssrc = (leg.local_ssrc ^ 0x5A5A5A5A) or 1
        self.generator_sequence = 0
        self.generator_timestamp = 0
        self.recent_digits: deque[tuple[str, str, float]] = deque(maxlen=8)
        self.typeahead: deque[str] = deque(maxlen=64)
        self.collector: DigitCollector | None = None
        self.closed = False

    # -- asyncio protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if addr == self.fast_source and len(data) >= 12:
            first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
            if ssrc == self.fast_ssrc and second & 0x7F == self.fast_payload_type:
                relay = self.relay
                if relay is None:
                    now = self._clock()
                    self._reception_update(sequence, timestamp, now)  # type: ignore[misc]
                    self.last_rtp_at = now
                    self.bytes_received += len(data) - 12
                    return
                delta = (sequence - relay.highest_in) & 0xFFFF
                if (delta <= _MAX_JUMP or delta >= 0x10000 - _MAX_JUMP) and (
                    relay.table is None or first == 0x80
                ):
                    now = self._clock()
                    self._reception_update(sequence, timestamp, now)  # type: ignore[misc]
                    self.last_rtp_at = now
                    self.bytes_received += len(data) - 12
                    if delta < 0x8000:
                        relay.highest_in = sequence
                    out = bytearray(data)
                    sequence_out = (sequence + relay.sequence_offset) & 0xFFFF
                    timestamp_out = (timestamp + relay.timestamp_offset) & 0xFFFFFFFF
                    _RESTAMP(out, 2, sequence_out, timestamp_out, relay.out_ssrc)
                    if relay.table is not None:
                        out[1] = (second & 0x80) | relay.audio_payload_type
                        out[12:] = data[12:].translate(relay.table)
                    target = relay.target
                    target.transport.sendto(out, target.leg.learner.remote)  # type: ignore[union-attr]
                    relay.packets += 1
                    relay.octets += len(data) - 12
                    relay.last_sequence_out = sequence_out
                    relay.last_timestamp_out = timestamp_out
                    relay.last_at = now
                    return
        self._slow_datagram(data, addr)

    def _slow_datagram(self, data: bytes, addr: Address) -> None:
        now = self._clock()
        packet = self.leg.receive_datagram(data, addr, now)
        if packet is None:
            return
        self.last_rtp_at = now
        self.bytes_received += len(packet.payload)
        self._on_slow_packet(self, packet, now)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a far end that is not up yet: nothing to do.
        pass

    # -- sending ---------------------------------------------------------------------------

    @property
    def far_end_receives(self) -> bool:
        return self.remote is not None and self.remote.receives and not self.offer_pending

    def send_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.sendto(data, self.leg.remote_address)

    def send_frame(self, samples: Int16Array, now: float) -> None:
        """Encode one generated 20 ms frame and send it through the leg's rewriter."""
        if self.codec is None or not self.far_end_receives:
            return
        packet = RtpPacket(
            payload_type=self.send_payload_type,
            sequence_number=self.generator_sequence,
            timestamp=self.generator_timestamp,
            ssrc=self.generator_ssrc,
            payload=self.codec.encode(samples).tobytes(),
        )
        self.generator_sequence = (self.generator_sequence + 1) & 0xFFFF
        self.generator_timestamp = (self.generator_timestamp + len(samples)) & 0xFFFFFFFF
        data = self.leg.prepare_outgoing(packet, now)
        if data is not None:
            self.send_raw(data)

    def send_rtcp(self, data: bytes) -> None:
        if self.closed or self.remote is None:
            return
        if self.rtcp_mux:
            self.send_raw(data)
        elif self.rtcp_transport is not None:
            port = self.remote.rtcp_port or self.leg.remote_address[1] + 1
            self.rtcp_transport.sendto(data, (self.leg.remote_address[0], port))

    # -- modes -----------------------------------------------------------------------------

    @property
    def needs_audio(self) -> bool:
        """Whether this endpoint's received audio must be decoded at each tick."""
        return (
            self.inband_dtmf
            or self.detect_fax
            or self.recordings > 0
            or self.conference_id is not None
        )

    def refresh_fast_path(self) -> None:
        """Enable the fast path exactly when every packet it would take needs nothing else."""
        learner = self.leg.learner
        reception = self.leg.reception
        relay = self.relay
        if (
            learner.locked
            and learner.learned
            and reception is not None
            and self.leg.remote_ssrc is not None
            and not self.needs_audio
            and self.codec is not None
            and (relay is None or relay.source_ssrc == self.leg.remote_ssrc)
        ):
            self.fast_source = learner.remote
            self.fast_ssrc = self.leg.remote_ssrc
            self.fast_payload_type = self.receive_payload_type
            self._reception_update = reception.update
        else:
            self.fast_source = None

    def ensure_decoding(self) -> None:
        if self.needs_audio:
            if self.jitter is None:
                self.jitter = JitterBuffer()
        else:
            self.jitter = None
        if self.inband_dtmf and self.dtmf_detector is None:
            self.dtmf_detector = DtmfDetector()
        if self.detect_fax and self.fax_detector is None:
            self.fax_detector = FaxToneDetector()
        self.refresh_fast_path()

    def pull_frame(self, now: float) -> Int16Array:
        """This tick's decoded inbound audio (silence while nothing is there)."""
        frame = self.jitter.pop(now) if self.jitter is not None else None
        if frame is None or frame.payload is None or self.codec is None:
            return np.zeros(FRAME, dtype=np.int16)
        samples = self.codec.decode(frame.payload)
        if len(samples) != FRAME:
            fitted = np.zeros(FRAME, dtype=np.int16)
            fitted[: min(FRAME, len(samples))] = samples[:FRAME]
            return fitted
        return samples

    def close_sockets(self) -> None:
        self.closed = True
        self.fast_source = None
        if self.transport is not None:
            self.transport.close()
        if self.rtcp_transport is not None:
            self.rtcp_transport.close()


class RtcpProtocol(asyncio.DatagramProtocol):
    """The separate RTCP port of a leg that does not multiplex (RFC 3550's port + 1)."""

    def __init__(self, endpoint: Endpoint, clock: Callable[[], float]) -> None:
        self.endpoint = endpoint
        self._clock = clock

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if is_rtcp(data):
            self.endpoint.leg.receive_rtcp_datagram(data, addr, self._clock())
