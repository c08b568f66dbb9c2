"""RTCP packets (RFC 3550 §6.4-6.6) and compound packets as parse/``bytes()`` pairs.

SR, RR, SDES and BYE are understood; any other packet type (APP, feedback, XR) is kept as an
:class:`RtcpUnknownPacket` so a relay can forward it untouched.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from callmesh_media.rtp.packet import RTP_VERSION, RtpParseError

_COMMON_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IIIII")
REPORT_BLOCK_LENGTH = _REPORT_BLOCK.size  # 24
MAX_REPORT_BLOCKS = 31


class RtcpPacketType(IntEnum):
    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204


class SdesItemType(IntEnum):
    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


@dataclass(slots=True)
class RtcpReportBlock:
    ssrc: int
    fraction_lost: int  # 0..255, fixed point /256
    packets_lost: int  # cumulative, signed 24-bit (duplicates can make it negative)
    highest_sequence: int  # extended highest sequence number received
    jitter: int  # interarrival jitter in timestamp units
    last_sr: int  # middle 32 bits of the NTP timestamp of the last SR received
    delay_since_last_sr: int  # in units of 1/65536 s

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> RtcpReportBlock:
        if len(data) - offset < REPORT_BLOCK_LENGTH:
            raise RtpParseError("RTCP report block truncated")
        ssrc, fraction, lost_raw, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, offset
        )
        lost = int.from_bytes(lost_raw, "big", signed=True)
        return cls(ssrc, fraction, lost, highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        # Clamp rather than fail: RFC 3550 §6.4.1 says the cumulative count saturates.
        lost = max(-(1 << 23), min((1 << 23) - 1, self.packets_lost))
        return _REPORT_BLOCK.pack(
            self.ssrc,
            self.fraction_lost,
            lost.to_bytes(3, "big", signed=True),
            self.highest_sequence,
            self.jitter,
            self.last_sr,
            self.delay_since_last_sr,
        )


def _header(count: int, packet_type: int, body_length: int, padding: bool = False) -> bytes:
    if body_length % 4:
        raise ValueError("RTCP packet body must be 32-bit aligned")
    first = (RTP_VERSION << 6) | (0x20 if padding else 0) | count
    return _COMMON_HEADER.pack(first, packet_type, body_length // 4)


def _parse_blocks(body: bytes, offset: int, count: int) -> list[RtcpReportBlock]:
    if len(body) - offset < count * REPORT_BLOCK_LENGTH:
        raise RtpParseError(
            f"RTCP report count {count} needs {count * REPORT_BLOCK_LENGTH} bytes, "
            f"{len(body) - offset} present"
        )
    return [RtcpReportBlock.parse(body, offset + i * REPORT_BLOCK_LENGTH) for i in range(count)]


@dataclass(slots=True)
class RtcpSenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP timestamp
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[RtcpReportBlock] = field(default_factory=list)
    extension: bytes = b""  # profile-specific extension, relayed opaque

    packet_type = RtcpPacketType.SR

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpSenderReport:
        if len(body) < 4 + _SENDER_INFO.size:
            raise RtpParseError("RTCP SR shorter than its sender info")
        (ssrc,) = struct.unpack_from("!I", body)
        ntp_msw, ntp_lsw, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body, 4)
        start = 4 + _SENDER_INFO.size
        reports = _parse_blocks(body, start, count)
        return cls(
            ssrc=ssrc,
            ntp_timestamp=(ntp_msw << 32) | ntp_lsw,
            rtp_timestamp=rtp_ts,
            packet_count=packets,
            octet_count=octets,
            reports=reports,
            extension=bytes(body[start + count * REPORT_BLOCK_LENGTH :]),
        )

    def __bytes__(self) -> bytes:
        if len(self.reports) > MAX_REPORT_BLOCKS:
            raise ValueError("too many report blocks for one RTCP packet")
        body = b"".join(
            [
                struct.pack("!I", self.ssrc),
                _SENDER_INFO.pack(
                    self.ntp_timestamp >> 32,
                    self.ntp_timestamp & 0xFFFFFFFF,
                    self.rtp_timestamp,
                    self.packet_count,
                    self.octet_count,
                ),
                *(bytes(r) for r in self.reports),
                self.extension,
            ]
        )
        return _header(len(self.reports), self.packet_type, len(body)) + body


@dataclass(slots=True)
class RtcpReceiverReport:
    ssrc: int
    reports: list[RtcpReportBlock] = field(default_factory=list)
    extension: bytes = b""

    packet_type = RtcpPacketType.RR

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpReceiverReport:
        if len(body) < 4:
            raise RtpParseError("RTCP RR shorter than its SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        reports = _parse_blocks(body, 4, count)
        return cls(ssrc=ssrc, reports=reports, extension=bytes(body[4 + count * 24 :]))

    def __bytes__(self) -> bytes:
        if len(self.reports) > MAX_REPORT_BLOCKS:
            raise ValueError("too many report blocks for one RTCP packet")
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        body += self.extension
        return _header(len(self.reports), self.packet_type, len(body)) + body


@dataclass(slots=True)
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)

    def item(self, item_type: SdesItemType) -> bytes | None:
        for kind, value in self.items:
            if kind == item_type:
                return value
        return None


@dataclass(slots=True)
class RtcpSourceDescription:
    chunks: list[SdesChunk] = field(default_factory=list)

    packet_type = RtcpPacketType.SDES

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpSourceDescription:
        chunks: list[SdesChunk] = []
        offset = 0
        for _ in range(count):
            if len(body) - offset < 4:
                raise RtpParseError("RTCP SDES chunk truncated before its SSRC")
            (ssrc,) = struct.unpack_from("!I", body, offset)
            offset += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if offset >= len(body):
                    raise RtpParseError("RTCP SDES chunk has no terminating null item")
                kind = body[offset]
                if kind == 0:
                    # The null item, then padding up to the next 32-bit boundary.
                    offset = (offset + 4) & ~3
                    break
                if offset + 2 > len(body):
                    raise RtpParseError("RTCP SDES item truncated before its length")
                length = body[offset + 1]
                if offset + 2 + length > len(body):
                    raise RtpParseError(f"RTCP SDES item of {length} bytes is truncated")
                items.append((kind, bytes(body[offset + 2 : offset + 2 + length])))
                offset += 2 + length
            chunks.append(SdesChunk(ssrc=ssrc, items=items))
        if offset > len(body):
            raise RtpParseError("RTCP SDES chunk padding runs past the packet")
        return cls(chunks=chunks)

    def __bytes__(self) -> bytes:
        if len(self.chunks) > MAX_REPORT_BLOCKS:
            raise ValueError("too many SDES chunks for one RTCP packet")
        body = bytearray()
        for chunk in self.chunks:
            body += struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                if len(value) > 255:
                    raise ValueError("SDES item longer than 255 bytes")
                body += bytes([kind, len(value)]) + value
            # At least one null octet terminates the list, then pad to 32 bits.
            body += bytes(4 - (len(body) % 4))
        return _header(len(self.chunks), self.packet_type, len(body)) + bytes(body)


@dataclass(slots=True)
class RtcpBye:
    sources: list[int] = field(default_factory=list)
    reason: bytes = b""

    packet_type = RtcpPacketType.BYE

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> RtcpBye:
        if len(body) < 4 * count:
            raise RtpParseError(f"RTCP BYE lists {count} sources but is {len(body)} bytes long")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = b""
        offset = 4 * count
        if offset < len(body):
            length = body[offset]
            if offset + 1 + length > len(body):
                raise RtpParseError("RTCP BYE reason is truncated")
            reason = bytes(body[offset + 1 : offset + 1 + length])
        return cls(sources=sources, reason=reason)

    def __bytes__(self) -> bytes:
        if len(self.sources) > MAX_REPORT_BLOCKS:
            raise ValueError("too many sources for one RTCP BYE")
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason:
            if len(self.reason) > 255:
                raise ValueError("BYE reason longer than 255 bytes")
            body += bytes([len(self.reason)]) + self.reason
            body += bytes(-len(body) % 4)
        return _header(len(self.sources), self.packet_type, len(body)) + body


@dataclass(slots=True)
class RtcpUnknownPacket:
    """Any RTCP packet type this core does not interpret (APP, RTPFB, PSFB, XR, ...)."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = (
    RtcpSenderReport | RtcpReceiverReport | RtcpSourceDescription | RtcpBye | RtcpUnknownPacket
)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 §6.1) into its parts, in order."""
    if len(data) < 4:
        raise RtpParseError(f"RTCP packet length {len(data)} is shorter than its 4-byte header")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtpParseError(f"{len(data) - offset} trailing bytes after the last RTCP packet")
        first, packet_type, words = _COMMON_HEADER.unpack_from(data, offset)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTCP version {version} is not 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtpParseError(
                f"RTCP packet type {packet_type} declares {4 * words} bytes, "
                f"{len(data) - offset - 4} present"
            )
        body = bytes(data[offset + 4 : end])
        if first & 0x20:
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RtpParseError("RTCP padding count is invalid")
            body = body[: -body[-1]]
        count = first & 0x1F
        packets.append(_parse_one(packet_type, count, body))
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RtcpPacketType.SR:
        return RtcpSenderReport.parse_body(count, body)
    if packet_type == RtcpPacketType.RR:
        return RtcpReceiverReport.parse_body(count, body)
    if packet_type == RtcpPacketType.SDES:
        return RtcpSourceDescription.parse_body(count, body)
    if packet_type == RtcpPacketType.BYE:
        return RtcpBye.parse_body(count, body)
    if not 192 <= packet_type <= 223:
        raise RtpParseError(f"packet type {packet_type} is not an RTCP type")
    return RtcpUnknownPacket(packet_type=packet_type, count=count, body=body)


def build_compound(packets: Sequence[RtcpPacket] | Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound RTCP datagram."""
    return b"".join(bytes(p) for p in packets)


def ntp_timestamp(unix_time: float) -> int:
    """64-bit NTP timestamp (seconds since 1900 in the high word) for a Unix time."""
    ntp_seconds = unix_time + 2_208_988_800
    whole = int(ntp_seconds)
    fraction = int((ntp_seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return ((whole & 0xFFFFFFFF) << 32) | fraction


def ntp_middle_32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp, as carried in LSR (RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF
