"""Parse SIP messages from datagrams and byte streams (RFC 3261 section 7 and 18.3).

The hot path is written with ``str.partition``/``split`` and dictionary
look-ups; only the header fields every message needs (start line, top Via,
From, To, Call-ID, CSeq, Max-Forwards, Content-Length, Contact) are
validated eagerly, the rest on first access. ``SipParseError`` is the only
exception that escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipFramingError, SipParseError
from .grammar import is_token, split_comma_list, unfold
from .headers import (
    canonical_key,
    display_name,
    parse_call_id,
    parse_contacts,
    parse_cseq,
    parse_name_addr,
    parse_uint,
    parse_via,
)
from .message import SINGLE_VALUE_HEADERS, SipMessage, SipRequest, SipResponse, new_tag
from .uri import SipUri, parse_uri


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Size limits applied before any header is interpreted."""

    max_message_size: int = 65_535
    max_headers: int = 128
    max_header_length: int = 8_192


DEFAULT_LIMITS = ParserLimits()

# Header names as they are usually written, mapped to (key, name to write back).
_KNOWN_SPELLINGS: dict[str, tuple[str, str]] = {}
for _name in [
    "Via",
    "v",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "Call-Id",
    "i",
    "CSeq",
    "Contact",
    "m",
    "Max-Forwards",
    "Content-Type",
    "c",
    "Content-Length",
    "l",
    "Route",
    "Record-Route",
    "Allow",
    "Supported",
    "k",
    "Require",
    "Proxy-Require",
    "Expires",
    "User-Agent",
    "Server",
    "Accept",
    "Authorization",
    "Proxy-Authorization",
    "WWW-Authenticate",
    "Proxy-Authenticate",
    "Content-Disposition",
    "Content-Encoding",
    "e",
    "Subject",
    "s",
    "Event",
    "o",
    "Allow-Events",
    "u",
    "Refer-To",
    "r",
    "Referred-By",
    "b",
    "Session-Expires",
    "x",
    "Min-SE",
    "Date",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Privacy",
    "Reason",
    "Warning",
    "Retry-After",
]:
    _key = canonical_key(_name)
    _KNOWN_SPELLINGS[_name] = (_key, display_name(_key))
    _KNOWN_SPELLINGS[_name.lower()] = (_key, display_name(_key))
del _name, _key


def parse_message(
    data: bytes,
    *,
    stream: bool = False,
    limits: ParserLimits = DEFAULT_LIMITS,
    lazy: bool = False,
) -> SipRequest | SipResponse:
    """Parse one complete message.

    ``stream=False`` (UDP): the datagram is the message; a Content-Length
    larger than what arrived is an error and a smaller one truncates the body
    (RFC 3261 18.3); without Content-Length the body runs to the end. With
    ``stream=True`` (TCP/TLS, the bytes come from :class:`StreamFramer`)
    Content-Length is mandatory.

    By default every header the core interprets is validated here. With
    ``lazy=True`` only what transaction matching and framing need (start
    line, top Via, CSeq, Call-ID, Content-Length) is checked now; From, To,
    Contact and Max-Forwards are parsed on first access (their accessors raise
    :class:`SipParseError`), e.g. to absorb retransmissions cheaply.
    """
    size = len(data)
    if size > limits.max_message_size:
        raise SipParseError("Message Too Large", 513)
    start = 0
    # RFC 3261 7.5: CRLFs before the start line are ignored.
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end == -1:
        if stream or start >= size:
            raise SipParseError("Bad Request - Missing empty line after headers")
        # A datagram that stops right after its last header: be liberal.
        head_end = size - 2 if data.endswith(b"\r\n") else size
        body_start = size
    else:
        head_end = end
        body_start = end + 4
    head = data[start:head_end].decode("utf-8", "surrogateescape")
    if "\n " in head or "\n\t" in head:
        head = unfold(head)
    lines = head.split("\r\n")
    line_count = len(lines)
    if head.count("\n") != line_count - 1 or head.count("\r") != line_count - 1:
        raise SipParseError("Bad Request - Bare CR or LF in headers")
    if line_count - 1 > limits.max_headers:
        raise SipParseError("Bad Request - Too Many Headers")

    message = _parse_start_line(lines[0], limits)
    entries: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    max_length = limits.max_header_length
    spellings = _KNOWN_SPELLINGS
    for line in lines[1:]:
        if len(line) > max_length:
            raise SipParseError("Bad Request - Header Too Long")
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError("Bad Request - Malformed header line")
        known = spellings.get(name)
        if known is None:
            stripped = name.rstrip(" \t")
            known = spellings.get(stripped)
            if known is None:
                if not is_token(stripped):
                    raise SipParseError("Bad Request - Invalid header name")
                key = canonical_key(stripped)
                known = (key, display_name(key) if len(stripped) == 1 else stripped)
        key = known[0]
        value = value.strip(" \t")
        entries.append((key, known[1], value))
        values = index.get(key)
        if values is None:
            index[key] = [value]
        else:
            if key in SINGLE_VALUE_HEADERS:
                raise SipParseError(f"Bad Request - Multiple {display_name(key)} headers")
            values.append(value)
    message._headers = entries
    message._index = index
    message._cache = {}

    # Eager validation of what every message needs; each raises SipParseError.
    # (Direct calls rather than the cached properties: this is the hot path.)
    cache = message._cache
    vias = index.get("via")
    if vias is None:
        raise SipParseError("Bad Request - Missing Via")
    first_via = vias[0]
    if "," in first_via:
        first_via = split_comma_list(first_via)[0]
        if not first_via:
            raise SipParseError("Bad Request - Empty element in Via")
    cache["top-via"] = parse_via(first_via)
    cache["cseq"] = parse_cseq(_mandatory(index, "cseq", "CSeq"))
    cache["call-id"] = parse_call_id(_mandatory(index, "call-id", "Call-ID"))
    if not lazy:
        cache["from"] = parse_name_addr(_mandatory(index, "from", "From"), "From")
        cache["to"] = parse_name_addr(_mandatory(index, "to", "To"), "To")
        max_forwards = index.get("max-forwards")
        cache["max-forwards"] = (
            None if max_forwards is None else parse_uint(max_forwards[0], "Max-Forwards", 255)
        )
        contacts = index.get("contact")
        if contacts is not None:
            if len(contacts) == 1:
                cache["contact"] = parse_contacts(contacts[0])
            else:
                _ = message.contacts
    lengths = index.get("content-length")
    content_length = (
        None if lengths is None else parse_uint(lengths[0], "Content-Length", 2**31 - 1)
    )
    cache["content-length"] = content_length
    available = size - body_start
    if content_length is None:
        if stream:
            raise SipParseError("Bad Request - Missing Content-Length")
        message.body = data[body_start:]
    elif content_length > available:
        raise SipParseError("Bad Request - Content-Length exceeds message size")
    else:
        message.body = data[body_start : body_start + content_length]
    return message


def _mandatory(index: dict[str, list[str]], key: str, what: str) -> str:
    values = index.get(key)
    if values is None:
        raise SipParseError(f"Bad Request - Missing {what}")
    return values[0]


def _parse_start_line(line: str, limits: ParserLimits) -> SipRequest | SipResponse:
    if len(line) > limits.max_header_length:
        raise SipParseError("Request-URI Too Long", 414)
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if parts[0] != "SIP/2.0":
            raise SipParseError("Bad Response - Unsupported SIP version")
        if len(parts) < 2:
            raise SipParseError("Bad Response - Malformed Status-Line")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
            raise SipParseError("Bad Response - Invalid status code")
        response = SipResponse.__new__(SipResponse)
        response.status_code = int(code)
        response.reason = parts[2] if len(parts) == 3 else ""
        return response
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad Request - Malformed Request-Line")
    method, uri_text, version = parts
    if version != "SIP/2.0":
        if version.upper() == "SIP/2.0":
            pass
        elif version.upper().startswith("SIP/"):
            raise SipParseError("Version Not Supported", 505)
        else:
            raise SipParseError("Bad Request - Malformed Request-Line")
    if not is_token(method):
        raise SipParseError("Bad Request - Invalid method")
    if uri_text.startswith("<"):
        raise SipParseError("Bad Request - Invalid Request-URI")
    try:
        uri = parse_uri(uri_text)
    except SipParseError:
        raise SipParseError("Bad Request - Invalid Request-URI") from None
    if isinstance(uri, SipUri) and uri.headers:
        raise SipParseError("Bad Request - Headers in Request-URI")
    request = SipRequest.__new__(SipRequest)
    request.method = method
    request.uri = uri
    return request


# ---------------------------------------------------------------------------
# Stream framing (TCP, TLS)


@dataclass(slots=True)
class StreamFrames:
    """What one :meth:`StreamFramer.feed` call found."""

    messages: list[bytes] = field(default_factory=list)
    # Each RFC 5626 double-CRLF ping; the adapter answers each with one CRLF.
    keepalive_pings: int = 0
    # Set when the stream cannot be framed any further: the adapter handles
    # ``messages`` first, then answers the error (build_error_response on
    # ``error.head``) and closes the connection.
    error: SipFramingError | None = None


_CONTENT_LENGTH_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


class StreamFramer:
    """Split a byte stream into whole messages using Content-Length (RFC 3261 18.3).

    Errors are fatal for the connection: :meth:`feed` reports the first one
    in :attr:`StreamFrames.error` (with every message framed before it) and
    every later call reports it again.
    """

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buffer = bytearray()
        self._error: SipFramingError | None = None
        # How far the current buffer is known to hold no CRLFCRLF, so that a message
        # trickling in byte by byte is not rescanned from the start each time.
        self._scanned = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> StreamFrames:
        frames = StreamFrames()
        if self._error is not None:
            frames.error = self._error
            return frames
        buffer = self._buffer
        buffer += data
        try:
            self._split(buffer, frames)
        except SipFramingError as error:
            self._error = error
            frames.error = error
            buffer.clear()
        return frames

    def _split(self, buffer: bytearray, frames: StreamFrames) -> None:
        limits = self._limits
        while buffer:
            if buffer.startswith(b"\r\n"):
                self._scanned = 0
                if buffer.startswith(b"\r\n\r\n"):
                    frames.keepalive_pings += 1
                    del buffer[:4]
                    continue
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    return  # maybe the first half of a ping
                del buffer[:2]
                continue
            end = buffer.find(b"\r\n\r\n", self._scanned)
            if end == -1:
                if len(buffer) > limits.max_message_size:
                    raise SipFramingError("Message Too Large", bytes(buffer[:4096]), 513)
                self._scanned = max(0, len(buffer) - 3)
                return
            head = bytes(buffer[:end])
            matches = _CONTENT_LENGTH_RE.findall(b"\r\n" + head)
            if not matches:
                raise SipFramingError("Bad Request - Missing Content-Length", head)
            if len(matches) > 1:
                raise SipFramingError("Bad Request - Multiple Content-Length headers", head)
            text = matches[0].strip(b" \t")
            if not text.isdigit() or len(text) > 10:
                raise SipFramingError("Bad Request - Invalid Content-Length", head)
            total = end + 4 + int(text)
            if total > limits.max_message_size:
                raise SipFramingError("Message Too Large", head, 513)
            if len(buffer) < total:
                return
            frames.messages.append(bytes(buffer[:total]))
            del buffer[:total]
            self._scanned = 0


# ---------------------------------------------------------------------------
# Answering what could not be parsed

_RECOVERABLE = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def build_error_response(
    data: bytes, error: SipParseError, *, to_tag: str | None = None
) -> bytes | None:
    """The response (400, 505, 513, ...) to a request that failed to parse.

    Returns ``None`` when nothing should be sent: the message is a response,
    an ACK, or no Via could be recovered to route the answer.
    """
    end = data.find(b"\r\n\r\n")
    head = (data if end == -1 else data[:end]).decode("utf-8", "surrogateescape")
    head = unfold(head.lstrip("\r\n"))
    lines = head.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = lines[0]
    method = first.split(" ", 1)[0]
    if not method or method.startswith("SIP/") or method == "ACK":
        return None
    found: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = canonical_key(name.strip(" \t"))
        if key in _RECOVERABLE:
            found.setdefault(key, []).append(value.strip(" \t"))
    if "via" not in found:
        return None
    reason = error.reason
    if error.status_code != 400 and not reason:
        reason = "Error"
    out = [f"SIP/2.0 {error.status_code} {reason}"]
    out.extend("Via: " + value for value in found["via"])
    for key in ("from", "to", "call-id", "cseq"):
        values = found.get(key)
        if not values:
            continue
        value = values[0]
        if key == "to" and "tag=" not in value.lower():
            value += ";tag=" + (to_tag or new_tag())
        out.append(f"{_RECOVERABLE[key]}: {value}")
    out.append("Content-Length: 0")
    out.append("\r\n")
    return "\r\n".join(out).encode("utf-8", "surrogateescape")


def is_request(message: SipMessage) -> bool:
    return isinstance(message, SipRequest)
