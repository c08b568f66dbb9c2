"""The little SDP (RFC 4566 / RFC 3264) that media needs, parsed and built without I/O.

Only the first ``m=audio`` line matters to a telephony leg: its port, payload types and their
``rtpmap`` names (PCMU, PCMA, telephone-event), ``ptime``, the direction attribute, RTCP
multiplexing (RFC 5761) or an explicit ``a=rtcp`` port (RFC 3605), and the connection address
(media-level ``c=`` wins over the session-level one). Everything else is ignored, not rejected:
an offer full of attributes we do not use is still a valid offer.

Problems are reported as :class:`SdpError` whose message names what is wrong, because the edge
turns it into a precise INVALID_ARGUMENT for sip-edge (and from there into a 488 reason).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# The static payload types a G.711 leg may see without an rtpmap (RFC 3551 table 4).
_STATIC_NAMES = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class SdpError(ValueError):
    """The SDP cannot be used; the message names the problem."""


@dataclass(slots=True)
class AudioDescription:
    """The audio stream one side describes."""

    address: str
    port: int
    payload_types: list[int]
    # payload type -> (encoding name upper-cased, clock rate)
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    direction: str = "sendrecv"
    ptime_ms: int | None = None
    rtcp_mux: bool = False
    rtcp_port: int | None = None

    def encoding(self, payload_type: int) -> tuple[str, int] | None:
        return self.rtpmap.get(payload_type) or _STATIC_NAMES.get(payload_type)

    def payload_type_of(self, name: str, clock_rate: int = 8000) -> int | None:
        """The first payload type listed on the m= line with this encoding, if any."""
        for payload_type in self.payload_types:
            if self.encoding(payload_type) == (name.upper(), clock_rate):
                return payload_type
        return None

    @property
    def on_hold(self) -> bool:
        """The far end will not listen to us (RFC 3264 §8.4, and the old c=0.0.0.0 style)."""
        return (
            self.direction in ("sendonly", "inactive") or self.address == "0.0.0.0" or not self.port
        )

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and bool(self.port)

    @property
    def receives(self) -> bool:
        return (
            self.direction in ("sendrecv", "recvonly")
            and bool(self.port)
            and self.address != "0.0.0.0"
        )


def _number(text: str, what: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"{what} {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise SdpError(f"{what} {value} is outside {low}-{high}")
    return value


def _connection_address(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError(f"c= line {value!r} is not 'IN IP4 <address>'")
    if parts[1] != "IP4":
        raise SdpError(f"c= address type {parts[1]} is not supported (IP4 only)")
    address = parts[2].split("/")[0]
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise SdpError(f"c= address {address!r} is not an IPv4 address") from None
    return address


def parse_audio(text: str) -> AudioDescription:
    """The first audio stream of an SDP body; SdpError if there is none usable."""
    if not text.strip():
        raise SdpError("SDP is empty")
    session_address: str | None = None
    audio: AudioDescription | None = None
    media_address: str | None = None
    in_audio = False
    seen_audio = False
    # A session-level direction applies to the stream unless the stream says otherwise.
    session_direction = "sendrecv"
    explicit_direction = False
    seen_version = False
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"SDP line {line[:40]!r} is not <type>=<value>")
        kind, value = line[0], line[2:]
        if kind == "v":
            if value.strip() != "0":
                raise SdpError(f"SDP version v={value} is not 0")
            seen_version = True
        elif kind == "m":
            in_audio = False
            fields = value.split()
            if len(fields) < 4:
                raise SdpError(f"m= line {value!r} needs media, port, proto and formats")
            if fields[0] != "audio" or seen_audio:
                continue
            seen_audio = True
            if fields[2] not in ("RTP/AVP", "RTP/AVPF"):
                raise SdpError(f"m=audio transport {fields[2]} is not supported (RTP/AVP only)")
            port = _number(fields[1].split("/")[0], "m=audio port", 0, 65535)
            payload_types = [_number(pt, "m=audio payload type", 0, 127) for pt in fields[3:]]
            audio = AudioDescription(address="", port=port, payload_types=payload_types)
            in_audio = True
        elif kind == "c":
            address = _connection_address(value)
            if audio is None and not seen_audio:
                session_address = address
            elif in_audio:
                media_address = address
        elif kind == "a":
            if audio is None and value in DIRECTIONS:
                session_direction = value
            elif in_audio and audio is not None:
                if value in DIRECTIONS:
                    explicit_direction = True
                _apply_attribute(value, audio)
    if not seen_version:
        raise SdpError("SDP has no v= line")
    if audio is None:
        raise SdpError("SDP has no m=audio line")
    stream_address = media_address or session_address
    if stream_address is None:
        raise SdpError("SDP has no c= connection address for the audio stream")
    audio.address = stream_address
    if not explicit_direction:
        audio.direction = session_direction
    return audio


def _apply_attribute(value: str, audio: AudioDescription) -> None:
    name, _, rest = value.partition(":")
    if name in DIRECTIONS:
        audio.direction = name
    elif name == "rtpmap":
        pt_text, _, encoding = rest.partition(" ")
        payload_type = _number(pt_text.strip(), "rtpmap payload type", 0, 127)
        parts = encoding.strip().split("/")
        if len(parts) < 2:
            raise SdpError(f"a=rtpmap:{rest} has no clock rate")
        audio.rtpmap[payload_type] = (
            parts[0].upper(),
            _number(parts[1], "rtpmap clock rate", 1, 1_000_000),
        )
    elif name == "ptime":
        audio.ptime_ms = _number(rest.strip().split(".")[0], "ptime", 1, 1000)
    elif name == "rtcp-mux":
        audio.rtcp_mux = True
    elif name == "rtcp":
        audio.rtcp_port = _number(rest.split()[0] if rest.split() else "", "a=rtcp port", 1, 65535)


def answer_direction(offered: str) -> str:
    return _ANSWER_DIRECTION.get(offered, "sendrecv")


@dataclass(frozen=True, slots=True)
class LocalAudio:
    """What we describe in our offer or answer."""

    address: str
    port: int
    # (payload type, encoding name) in order of preference.
    codecs: tuple[tuple[int, str], ...]
    telephone_event_payload_type: int | None
    ptime_ms: int
    direction: str
    rtcp_mux: bool


def build_sdp(local: LocalAudio, *, session_id: int, version: int) -> str:
    payload_types = [pt for pt, _ in local.codecs]
    if local.telephone_event_payload_type is not None:
        payload_types.append(local.telephone_event_payload_type)
    lines = [
        "v=0",
        f"o=callmesh {session_id} {version} IN IP4 {local.address}",
        "s=callmesh",
        f"c=IN IP4 {local.address}",
        "t=0 0",
        f"m=audio {local.port} RTP/AVP {' '.join(str(pt) for pt in payload_types)}",
    ]
    lines += [f"a=rtpmap:{pt} {name}/8000" for pt, name in local.codecs]
    if local.telephone_event_payload_type is not None:
        lines.append(f"a=rtpmap:{local.telephone_event_payload_type} telephone-event/8000")
        lines.append(f"a=fmtp:{local.telephone_event_payload_type} 0-16")
    lines.append(f"a=ptime:{local.ptime_ms}")
    if local.rtcp_mux:
        lines.append("a=rtcp-mux")
    else:
        lines.append(f"a=rtcp:{local.port + 1}")
    lines.append(f"a={local.direction}")
    return "\r\n".join(lines) + "\r\n"
