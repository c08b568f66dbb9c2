"""RTP data packets (RFC 3550 §5.1) as parse/``bytes()`` pairs.

Parsing is strict about structure (version, lengths, padding) because a packet that is
malformed here is dropped and counted by the session, never half-understood.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
RTP_HEADER_LENGTH = 12
MAX_CSRC_COUNT = 15
MAX_SEQUENCE = 1 << 16
MAX_TIMESTAMP = 1 << 32

_FIXED_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpParseError(ValueError):
    """Raised when bytes cannot be a valid RTP or RTCP packet; the message names the problem."""


@dataclass(slots=True)
class HeaderExtension:
    """The RFC 3550 §5.3.1 header extension: a 16-bit profile value and 32-bit-aligned data.

    One-byte and two-byte extension elements (RFC 8285) live inside ``data``; the media path
    only relays them, so they are kept opaque here.
    """

    profile: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if len(self.data) % 4:
            raise ValueError("header extension data must be a multiple of 4 bytes")


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)
    extension: HeaderExtension | None = None
    # Number of padding bytes to append on serialisation (including the count byte itself).
    padding_size: int = 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < RTP_HEADER_LENGTH:
            raise RtpParseError(f"RTP packet length {len(data)} is shorter than the 12-byte header")
        first, second, sequence_number, timestamp, ssrc = _FIXED_HEADER.unpack_from(data)
        version = first >> 6
        if version != RTP_VERSION:
            raise RtpParseError(f"RTP version {version} is not 2")
        has_padding = bool(first & 0x20)
        has_extension = bool(first & 0x10)
        csrc_count = first & 0x0F
        offset = RTP_HEADER_LENGTH
        csrc_end = offset + 4 * csrc_count
        if len(data) < csrc_end:
            raise RtpParseError(f"RTP packet truncated inside its {csrc_count} CSRC entries")
        csrc = list(struct.unpack_from(f"!{csrc_count}I", data, offset))
        offset = csrc_end

        extension: HeaderExtension | None = None
        if has_extension:
            if len(data) < offset + 4:
                raise RtpParseError("RTP packet truncated inside its extension header")
            profile, words = _EXTENSION_HEADER.unpack_from(data, offset)
            offset += 4
            extension_end = offset + 4 * words
            if len(data) < extension_end:
                raise RtpParseError(
                    f"RTP extension declares {4 * words} bytes but only {len(data) - offset} remain"
                )
            extension = HeaderExtension(profile=profile, data=bytes(data[offset:extension_end]))
            offset = extension_end

        end = len(data)
        padding_size = 0
        if has_padding:
            padding_size = data[-1]
            if padding_size == 0:
                raise RtpParseError("RTP padding flag set but the padding count is zero")
            if end - padding_size < offset:
                raise RtpParseError(
                    f"RTP padding count {padding_size} exceeds the {end - offset} bytes after "
                    "the header"
                )
            end -= padding_size

        return cls(
            payload_type=second & 0x7F,
            sequence_number=sequence_number,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[offset:end]),
            marker=bool(second & 0x80),
            csrc=csrc,
            extension=extension,
            padding_size=padding_size,
        )

    def __bytes__(self) -> bytes:
        if len(self.csrc) > MAX_CSRC_COUNT:
            raise ValueError(f"at most {MAX_CSRC_COUNT} CSRC entries fit in an RTP header")
        if not 0 <= self.padding_size <= 255:
            raise ValueError("padding_size must be 0..255")
        first = (
            (RTP_VERSION << 6)
            | (0x20 if self.padding_size else 0)
            | (0x10 if self.extension is not None else 0)
            | len(self.csrc)
        )
        second = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        parts = [_FIXED_HEADER.pack(first, second, self.sequence_number, self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            parts.append(
                _EXTENSION_HEADER.pack(self.extension.profile, len(self.extension.data) // 4)
            )
            parts.append(self.extension.data)
        parts.append(self.payload)
        if self.padding_size:
            parts.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """Tell RTCP from RTP on a multiplexed port (RFC 5761 §4: RTCP packet types 192..223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223
