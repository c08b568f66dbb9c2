"""SDP (RFC 4566/8866) parsing and serialization, and offer/answer (RFC 3264).

The parser keeps every line it does not interpret (as attributes or in
order), so a parsed description serializes back to an equivalent body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .errors import SdpError

MAX_SDP_SIZE = 64 * 1024


def _is_number(text: str, max_digits: int) -> bool:
    # str.isdigit() alone accepts "²" and unbounded lengths, which int() rejects.
    return text.isascii() and text.isdigit() and len(text) <= max_digits


def _payload_type(fmt: str) -> int | None:
    return int(fmt) if _is_number(fmt, 3) else None


class Direction(StrEnum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    def reversed(self) -> Direction:
        """The direction an answerer takes for this offered direction (RFC 3264 6.1)."""
        if self is Direction.SENDONLY:
            return Direction.RECVONLY
        if self is Direction.RECVONLY:
            return Direction.SENDONLY
        return self

    def combine(self, local: Direction) -> Direction:
        """Answer direction when the offer says ``self`` and we want ``local``."""
        can_send = self.reversed() in (Direction.SENDRECV, Direction.SENDONLY) and local in (
            Direction.SENDRECV,
            Direction.SENDONLY,
        )
        can_receive = self.reversed() in (Direction.SENDRECV, Direction.RECVONLY) and local in (
            Direction.SENDRECV,
            Direction.RECVONLY,
        )
        if can_send and can_receive:
            return Direction.SENDRECV
        if can_send:
            return Direction.SENDONLY
        if can_receive:
            return Direction.RECVONLY
        return Direction.INACTIVE


_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(slots=True)
class Origin:
    username: str
    session_id: str
    session_version: int
    network_type: str
    address_type: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.network_type} {self.address_type} {self.address}"
        )


@dataclass(slots=True)
class Connection:
    network_type: str
    address_type: str
    address: str

    @property
    def is_hold_address(self) -> bool:
        """RFC 2543 style hold: c=IN IP4 0.0.0.0."""
        return self.address == "0.0.0.0"

    def __str__(self) -> str:
        return f"{self.network_type} {self.address_type} {self.address}"


@dataclass(slots=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


# Static payload types (RFC 3551) we may see without an rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    3: ("GSM", 8000),
    4: ("G723", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
    18: ("G729", 8000),
}


@dataclass(slots=True)
class MediaDescription:
    media: str
    port: int
    protocol: str
    formats: list[str]
    port_count: int | None = None
    title: str | None = None
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def attribute_values(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            found = _DIRECTIONS.get(key)
            if found is not None:
                return found
        return None

    def set_direction(self, direction: Direction) -> None:
        self.attributes = [(k, v) for k, v in self.attributes if k not in _DIRECTIONS]
        self.attributes.append((direction.value, None))

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """rtpmap by payload type, including static types that have no rtpmap line."""
        maps: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            parsed = parse_rtpmap(value)
            maps[parsed.payload_type] = parsed
        for fmt in self.formats:
            pt = _payload_type(fmt)
            if pt is not None and pt not in maps and pt in STATIC_PAYLOAD_TYPES:
                name, rate = STATIC_PAYLOAD_TYPES[pt]
                maps[pt] = RtpMap(pt, name, rate)
        return maps

    def fmtp(self, payload_type: int) -> str | None:
        prefix = f"{payload_type} "
        for value in self.attribute_values("fmtp"):
            if value.startswith(prefix):
                return value[len(prefix) :].strip()
        return None

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        if value is None:
            return None
        try:
            return int(float(value))
        except (ValueError, OverflowError):
            raise SdpError(f"invalid a=ptime value {value!r}") from None

    def lines(self) -> list[str]:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out = [f"m={self.media} {port} {self.protocol} {' '.join(self.formats)}".rstrip()]
        if self.title is not None:
            out.append(f"i={self.title}")
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={value}" for value in self.bandwidths)
        out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        return out


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    # Session-level lines we keep but do not interpret (i=, u=, e=, p=, z=, k=, r=).
    other_lines: list[str] = field(default_factory=list)
    version: int = 0

    @property
    def direction(self) -> Direction | None:
        for key, _ in self.attributes:
            found = _DIRECTIONS.get(key)
            if found is not None:
                return found
        return None

    def media_direction(self, media: MediaDescription) -> Direction:
        """Effective direction of one stream (media level, then session level, then sendrecv)."""
        return media.direction or self.direction or Direction.SENDRECV

    def media_connection(self, media: MediaDescription) -> Connection | None:
        return media.connection or self.connection

    def to_bytes(self) -> bytes:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name or '-'}"]
        out.extend(self.other_lines)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={value}" for value in self.bandwidths)
        out.extend(f"t={value}" for value in self.timing)
        out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
        for media in self.media:
            out.extend(media.lines())
        return ("\r\n".join(out) + "\r\n").encode("utf-8")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def parse_rtpmap(value: str) -> RtpMap:
    pt_text, _, encoding = value.strip().partition(" ")
    parts = encoding.strip().split("/")
    if not _is_number(pt_text, 3) or int(pt_text) > 127 or len(parts) not in (2, 3):
        raise SdpError(f"invalid a=rtpmap value {value!r}")
    name, rate = parts[0], parts[1]
    if not name or not _is_number(rate, 9):
        raise SdpError(f"invalid a=rtpmap value {value!r}")
    channels = None
    if len(parts) == 3:
        if not _is_number(parts[2], 3):
            raise SdpError(f"invalid a=rtpmap channels in {value!r}")
        channels = int(parts[2])
    return RtpMap(int(pt_text), name, int(rate), channels)


def _parse_connection(value: str, line_number: int) -> Connection:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"line {line_number}: invalid c= line {value!r}")
    return Connection(parts[0], parts[1], parts[2])


def _parse_media(value: str, line_number: int) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"line {line_number}: m= line needs media, port and protocol")
    media, port_text, protocol = parts[0], parts[1], parts[2]
    port_part, slash, count_part = port_text.partition("/")
    if not _is_number(port_part, 5) or int(port_part) > 65535:
        raise SdpError(f"line {line_number}: invalid m= port {port_text!r}")
    port_count = None
    if slash:
        if not _is_number(count_part, 5):
            raise SdpError(f"line {line_number}: invalid m= port count {port_text!r}")
        port_count = int(count_part)
    formats = parts[3:]
    if protocol.upper().startswith("RTP/"):
        for fmt in formats:
            if not _is_number(fmt, 3) or int(fmt) > 127:
                raise SdpError(f"line {line_number}: invalid RTP payload type {fmt!r}")
    return MediaDescription(media, int(port_part), protocol, formats, port_count)


def parse_sdp(data: bytes) -> SessionDescription:
    """Parse an SDP body; raises :class:`SdpError` with the line that is wrong."""
    if len(data) > MAX_SDP_SIZE:
        raise SdpError("SDP body too large")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP body is not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SdpError("empty SDP body")
    if lines[0] != "v=0":
        raise SdpError("line 1: SDP must start with v=0")
    origin: Origin | None = None
    session_name: str | None = None
    session = SessionDescription(Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"), timing=[])
    current: MediaDescription | None = None
    for number, line in enumerate(lines[1:], start=2):
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"line {number}: expected '<type>=<value>', got {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            current = _parse_media(value, number)
            session.media.append(current)
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            if not name:
                raise SdpError(f"line {number}: empty attribute")
            entry = (name, attr_value if colon else None)
            (current.attributes if current is not None else session.attributes).append(entry)
        elif kind == "c":
            connection = _parse_connection(value, number)
            if current is not None:
                current.connection = connection
            else:
                session.connection = connection
        elif kind == "b":
            (current.bandwidths if current is not None else session.bandwidths).append(value)
        elif current is not None:
            if kind == "i":
                current.title = value
            elif kind != "k":
                raise SdpError(f"line {number}: '{kind}=' is not allowed in a media section")
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6 or not _is_number(parts[2], 20):
                raise SdpError(f"line {number}: invalid o= line")
            origin = Origin(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])
        elif kind == "s":
            session_name = value
        elif kind == "t":
            times = value.split()
            if len(times) != 2 or not all(_is_number(t, 20) for t in times):
                raise SdpError(f"line {number}: invalid t= line")
            session.timing.append(value)
        elif kind in "iuepzkr":
            session.other_lines.append(line)
        else:
            raise SdpError(f"line {number}: unknown SDP line type '{kind}='")
    if origin is None:
        raise SdpError("missing o= line")
    if session_name is None:
        raise SdpError("missing s= line")
    if not session.timing:
        raise SdpError("missing t= line")
    session.origin = origin
    session.session_name = session_name
    for media in session.media:
        if media.port != 0 and session.media_connection(media) is None:
            raise SdpError(f"no c= line for the {media.media} stream")
    return session


# ---------------------------------------------------------------------------
# Offer/answer


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec we support, by encoding name and clock rate."""

    name: str
    clock_rate: int = 8000
    static_payload_type: int | None = None
    fmtp: str | None = None


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
TELEPHONE_EVENT = Codec("telephone-event", 8000, None, "0-16")
DEFAULT_CODECS: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT)


@dataclass(frozen=True, slots=True)
class NegotiatedAudio:
    """What was agreed for the audio stream: enough for the media service."""

    remote_address: str
    remote_port: int
    payload_type: int
    codec: str
    clock_rate: int
    telephone_event_payload_type: int | None
    direction: Direction  # ours, as written in the answer
    ptime: int


@dataclass(frozen=True, slots=True)
class Answer:
    sdp: SessionDescription
    audio: NegotiatedAudio | None


def _same_codec(rtpmap: RtpMap, codec: Codec) -> bool:
    return rtpmap.encoding.lower() == codec.name.lower() and rtpmap.clock_rate == codec.clock_rate


def answer_offer(
    offer: SessionDescription,
    *,
    local_address: str,
    local_port: int,
    session_id: str,
    session_version: int = 0,
    codecs: tuple[Codec, ...] = DEFAULT_CODECS,
    local_direction: Direction = Direction.SENDRECV,
    username: str = "callmesh",
) -> Answer:
    """Answer ``offer`` (RFC 3264 section 6).

    The first audio stream that shares a voice codec with ``codecs`` is
    accepted on ``local_address:local_port`` with that one codec (plus
    telephone-event when both sides have it); every other stream is
    rejected with port 0, as RFC 3264 6 requires an m= line per offered one.
    The answered direction combines the offer's (sendonly -> recvonly, ...)
    with ``local_direction`` (use ``SENDONLY``/``INACTIVE`` to hold). Raises
    :class:`SdpError` when no audio stream can be accepted (the edge answers
    488).
    """
    address_type = "IP6" if ":" in local_address else "IP4"
    answer = SessionDescription(
        Origin(username, session_id, session_version, "IN", address_type, local_address),
        session_name="-",
        connection=Connection("IN", address_type, local_address),
        timing=["0 0"],
    )
    negotiated: NegotiatedAudio | None = None
    voice = [codec for codec in codecs if codec.name.lower() != "telephone-event"]
    events = next((c for c in codecs if c.name.lower() == "telephone-event"), None)
    rejection_reason = "offer has no audio stream"
    for media in offer.media:
        rejected = MediaDescription(media.media, 0, media.protocol, list(media.formats))
        if negotiated is not None or media.media != "audio" or media.port == 0:
            answer.media.append(rejected)
            continue
        if media.protocol.upper() not in ("RTP/AVP", "RTP/AVPF"):
            rejection_reason = f"unsupported media protocol {media.protocol}"
            answer.media.append(rejected)
            continue
        rtpmaps = media.rtpmaps
        chosen: tuple[int, Codec] | None = None
        for fmt in media.formats:  # the offerer's preference order (RFC 3264 6.1)
            rtpmap = rtpmaps.get(int(fmt))  # RTP formats were checked by the parser
            if rtpmap is None:
                continue
            match = next((c for c in voice if _same_codec(rtpmap, c)), None)
            if match is not None:
                chosen = (rtpmap.payload_type, match)
                break
        if chosen is None:
            rejection_reason = "no common audio codec (we support PCMU, PCMA)"
            answer.media.append(rejected)
            continue
        event_pt: int | None = None
        if events is not None:
            for fmt in media.formats:
                rtpmap = rtpmaps.get(int(fmt))
                if rtpmap is not None and _same_codec(rtpmap, events):
                    event_pt = rtpmap.payload_type
                    break
        connection = offer.media_connection(media)
        assert connection is not None  # parse_sdp guarantees it for port != 0
        offered_direction = offer.media_direction(media)
        if connection.is_hold_address and offered_direction is Direction.SENDRECV:
            # RFC 2543 hold: the offerer does not want to receive media.
            offered_direction = Direction.SENDONLY
        direction = offered_direction.combine(local_direction)
        ptime = media.ptime or 20
        payload_type, codec = chosen
        accepted = MediaDescription("audio", local_port, media.protocol, [str(payload_type)])
        accepted.attributes.append(("rtpmap", f"{payload_type} {codec.name}/{codec.clock_rate}"))
        if event_pt is not None and events is not None:
            accepted.formats.append(str(event_pt))
            accepted.attributes.append(("rtpmap", f"{event_pt} {events.name}/{events.clock_rate}"))
            accepted.attributes.append(("fmtp", f"{event_pt} {media.fmtp(event_pt) or '0-16'}"))
        accepted.attributes.append(("ptime", str(ptime)))
        accepted.attributes.append((direction.value, None))
        answer.media.append(accepted)
        negotiated = NegotiatedAudio(
            remote_address=connection.address,
            remote_port=media.port,
            payload_type=payload_type,
            codec=codec.name,
            clock_rate=codec.clock_rate,
            telephone_event_payload_type=event_pt,
            direction=direction,
            ptime=ptime,
        )
    if negotiated is None:
        raise SdpError(rejection_reason)
    return Answer(answer, negotiated)


def create_offer(
    *,
    local_address: str,
    local_port: int,
    session_id: str,
    session_version: int = 0,
    codecs: tuple[Codec, ...] = DEFAULT_CODECS,
    direction: Direction = Direction.SENDRECV,
    ptime: int = 20,
    username: str = "callmesh",
) -> SessionDescription:
    """An audio offer listing ``codecs`` in order; dynamic types start at 101."""
    address_type = "IP6" if ":" in local_address else "IP4"
    media = MediaDescription("audio", local_port, "RTP/AVP", [])
    next_dynamic = 101
    for codec in codecs:
        if codec.static_payload_type is not None:
            pt = codec.static_payload_type
        else:
            pt = next_dynamic
            next_dynamic += 1
        media.formats.append(str(pt))
        media.attributes.append(("rtpmap", f"{pt} {codec.name}/{codec.clock_rate}"))
        if codec.fmtp is not None:
            media.attributes.append(("fmtp", f"{pt} {codec.fmtp}"))
    media.attributes.append(("ptime", str(ptime)))
    media.attributes.append((direction.value, None))
    return SessionDescription(
        Origin(username, session_id, session_version, "IN", address_type, local_address),
        session_name="-",
        connection=Connection("IN", address_type, local_address),
        timing=["0 0"],
        media=[media],
    )


def read_answer(offer: SessionDescription, answer: SessionDescription) -> NegotiatedAudio:
    """What an answer to our ``offer`` agreed for audio (RFC 3264 section 7)."""
    if len(answer.media) != len(offer.media):
        raise SdpError("answer has a different number of m= lines than the offer")
    for offered, answered in zip(offer.media, answer.media, strict=True):
        if answered.media != offered.media:
            raise SdpError("answer m= lines are not in the offer's order")
        if answered.media != "audio" or answered.port == 0:
            continue
        rtpmaps = answered.rtpmaps
        offered_maps = offered.rtpmaps
        voice: RtpMap | None = None
        event_pt: int | None = None
        for fmt in answered.formats:
            pt = _payload_type(fmt)
            rtpmap = rtpmaps.get(pt) if pt is not None else None
            if rtpmap is None:
                continue
            if rtpmap.encoding.lower() == "telephone-event":
                event_pt = event_pt if event_pt is not None else rtpmap.payload_type
            elif voice is None:
                voice = rtpmap
        if voice is None:
            raise SdpError("answer accepted audio without a known codec")
        if not any(
            m.encoding.lower() == voice.encoding.lower() and m.clock_rate == voice.clock_rate
            for m in offered_maps.values()
        ):
            raise SdpError(f"answer chose {voice.encoding}, which was not offered")
        connection = answer.media_connection(answered)
        assert connection is not None
        theirs = answer.media_direction(answered)
        return NegotiatedAudio(
            remote_address=connection.address,
            remote_port=answered.port,
            payload_type=voice.payload_type,
            codec=voice.encoding,
            clock_rate=voice.clock_rate,
            telephone_event_payload_type=event_pt,
            direction=theirs.reversed(),
            ptime=answered.ptime or offered.ptime or 20,
        )
    raise SdpError("answer rejected every audio stream")
