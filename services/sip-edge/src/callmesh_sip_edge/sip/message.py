"""SIP requests and responses.

Header values are stored as text exactly as received (after unfolding), in
order, keyed by their lower-case long name. The header fields the core
depends on are parsed on first access and cached; ``parse_message`` touches
the ones every message needs so that a malformed one is rejected up front.
Serialization writes the stored text back, so an untouched header is
forwarded byte for byte.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from .errors import SipParseError
from .grammar import split_comma_list
from .headers import (
    ContactStar,
    CSeq,
    NameAddr,
    Via,
    canonical_key,
    display_name,
    parse_call_id,
    parse_contacts,
    parse_cseq,
    parse_media_type,
    parse_name_addr,
    parse_name_addr_list,
    parse_token_list,
    parse_uint,
    parse_via,
    parse_via_list,
)
from .uri import Uri

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

MAGIC_COOKIE = "z9hG4bK"

# Header fields that may appear at most once (RFC 3261 7.3.1 and 20).
SINGLE_VALUE_HEADERS = frozenset(
    {"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"}
)


def new_branch() -> str:
    """A fresh RFC 3261 branch: the magic cookie plus 64 random bits."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str | None = None) -> str:
    token = secrets.token_hex(12)
    return f"{token}@{host}" if host else token


_MISSING = object()


class SipMessage:
    """Common part of requests and responses: ordered headers and a body."""

    __slots__ = ("_cache", "_headers", "_index", "body")

    def __init__(
        self,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self._headers: list[tuple[str, str, str]] = []
        self._index: dict[str, list[str]] = {}
        self._cache: dict[str, Any] = {}
        self.body = body
        for name, value in headers:
            self.add_header(name, value)

    # -- raw header access -------------------------------------------------

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(name as written, value) pairs in order."""
        return [(name, value) for _, name, value in self._headers]

    def get(self, name: str) -> str | None:
        values = self._index.get(canonical_key(name))
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every header line of that name (not split on commas)."""
        return list(self._index.get(canonical_key(name), ()))

    def get_list(self, name: str) -> list[str]:
        """Every element of a comma-separated header, across all its lines."""
        out: list[str] = []
        for value in self._index.get(canonical_key(name), ()):
            out.extend(part for part in split_comma_list(value) if part)
        return out

    def has(self, name: str) -> bool:
        return canonical_key(name) in self._index

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        key = canonical_key(name)
        written = display_name(key) if len(name) == 1 or key in _KNOWN_KEYS else name
        entry = (key, written, value)
        values = self._index.setdefault(key, [])
        if first:
            position = next((i for i, h in enumerate(self._headers) if h[0] == key), 0)
            self._headers.insert(position, entry)
            values.insert(0, value)
        else:
            self._headers.append(entry)
            values.append(value)
        self._invalidate(key)

    def _invalidate(self, key: str) -> None:
        cache = self._cache
        if cache:
            cache.pop(key, None)
            cache.pop("tokens:" + key, None)
            if key == "via":
                cache.pop("top-via", None)

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of that header by one line with ``value``."""
        key = canonical_key(name)
        if key in self._index:
            position = next(i for i, h in enumerate(self._headers) if h[0] == key)
            self.remove_header(name)
            written = display_name(key) if len(name) == 1 or key in _KNOWN_KEYS else name
            self._headers.insert(position, (key, written, value))
            self._index[key] = [value]
            self._invalidate(key)
        else:
            self.add_header(name, value)

    def remove_header(self, name: str) -> None:
        key = canonical_key(name)
        if self._index.pop(key, None) is not None:
            self._headers = [h for h in self._headers if h[0] != key]
        self._invalidate(key)

    def remove_first(self, name: str) -> None:
        """Remove the first element of a list header (e.g. the top Via)."""
        key = canonical_key(name)
        values = self._index.get(key)
        if not values:
            return
        first = values[0]
        parts = split_comma_list(first)
        position = next(i for i, h in enumerate(self._headers) if h[0] == key)
        if len(parts) > 1:
            rest = ", ".join(parts[1:])
            self._headers[position] = (key, self._headers[position][1], rest)
            values[0] = rest
        else:
            del self._headers[position]
            del values[0]
            if not values:
                del self._index[key]
        self._invalidate(key)

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first element of a list header (e.g. the top Via) by ``value``."""
        key = canonical_key(name)
        values = self._index.get(key)
        if not values:
            self.add_header(name, value)
            return
        parts = split_comma_list(values[0])
        parts[0] = value
        joined = ", ".join(parts)
        position = next(i for i, h in enumerate(self._headers) if h[0] == key)
        self._headers[position] = (key, self._headers[position][1], joined)
        values[0] = joined
        self._invalidate(key)

    def replace_top_via(self, via: Via) -> None:
        """Replace the top Via element (keeping the parsed value for the next access)."""
        self.replace_first("via", str(via))
        self._cache["top-via"] = via

    def _cached(self, key: str, parse: Any) -> Any:
        cache = self._cache
        value = cache.get(key, _MISSING)
        if value is _MISSING:
            value = parse()
            cache[key] = value
        return value

    def _single(self, key: str, what: str) -> str | None:
        values = self._index.get(key)
        if not values:
            return None
        if len(values) > 1:
            raise SipParseError(f"Bad Request - Multiple {what} headers")
        return values[0]

    def _required(self, key: str, what: str) -> str:
        value = self._single(key, what)
        if value is None:
            raise SipParseError(f"Bad Request - Missing {what}")
        return value

    # -- typed accessors ---------------------------------------------------

    @property
    def top_via(self) -> Via:
        def parse() -> Via:
            values = self._index.get("via")
            if not values:
                raise SipParseError("Bad Request - Missing Via")
            first = values[0]
            if "," in first:
                element = split_comma_list(first)[0]
                if not element:
                    raise SipParseError("Bad Request - Empty element in Via")
                return parse_via(element)
            return parse_via(first)

        return self._cached("top-via", parse)  # type: ignore[no-any-return]

    @property
    def vias(self) -> list[Via]:
        def parse() -> list[Via]:
            out: list[Via] = []
            for value in self._index.get("via", ()):
                out.extend(parse_via_list(value))
            if not out:
                raise SipParseError("Bad Request - Missing Via")
            return out

        return self._cached("via", parse)  # type: ignore[no-any-return]

    @property
    def from_(self) -> NameAddr:
        return self._cached(  # type: ignore[no-any-return]
            "from", lambda: parse_name_addr(self._required("from", "From"), "From")
        )

    @property
    def to(self) -> NameAddr:
        return self._cached(  # type: ignore[no-any-return]
            "to", lambda: parse_name_addr(self._required("to", "To"), "To")
        )

    @property
    def call_id(self) -> str:
        return self._cached(  # type: ignore[no-any-return]
            "call-id", lambda: parse_call_id(self._required("call-id", "Call-ID"))
        )

    @property
    def cseq(self) -> CSeq:
        return self._cached(  # type: ignore[no-any-return]
            "cseq", lambda: parse_cseq(self._required("cseq", "CSeq"))
        )

    @property
    def max_forwards(self) -> int | None:
        def parse() -> int | None:
            value = self._single("max-forwards", "Max-Forwards")
            return None if value is None else parse_uint(value, "Max-Forwards", 255)

        return self._cached("max-forwards", parse)  # type: ignore[no-any-return]

    @property
    def content_length(self) -> int | None:
        def parse() -> int | None:
            value = self._single("content-length", "Content-Length")
            return None if value is None else parse_uint(value, "Content-Length", 2**31 - 1)

        return self._cached("content-length", parse)  # type: ignore[no-any-return]

    @property
    def content_type(self) -> str | None:
        """Media type without parameters, lower-cased (``application/sdp``)."""

        def parse() -> str | None:
            value = self._single("content-type", "Content-Type")
            return None if value is None else parse_media_type(value)[0]

        return self._cached("content-type", parse)  # type: ignore[no-any-return]

    @property
    def contacts(self) -> list[NameAddr] | ContactStar:
        def parse() -> list[NameAddr] | ContactStar:
            values = self._index.get("contact", ())
            if len(values) == 1:
                return parse_contacts(values[0])
            out: list[NameAddr] = []
            for value in values:
                parsed = parse_contacts(value)
                if isinstance(parsed, ContactStar):
                    raise SipParseError("Bad Request - Contact * mixed with other contacts")
                out.extend(parsed)
            return out

        return self._cached("contact", parse)  # type: ignore[no-any-return]

    @property
    def contact(self) -> NameAddr | None:
        """The first Contact, or ``None`` (also for ``Contact: *``)."""
        contacts = self.contacts
        if isinstance(contacts, ContactStar) or not contacts:
            return None
        return contacts[0]

    @property
    def routes(self) -> list[NameAddr]:
        return self._name_addr_list("route", "Route")

    @property
    def record_routes(self) -> list[NameAddr]:
        return self._name_addr_list("record-route", "Record-Route")

    def _name_addr_list(self, key: str, what: str) -> list[NameAddr]:
        def parse() -> list[NameAddr]:
            out: list[NameAddr] = []
            for value in self._index.get(key, ()):
                out.extend(parse_name_addr_list(value, what))
            return out

        return self._cached(key, parse)  # type: ignore[no-any-return]

    @property
    def expires(self) -> int | None:
        def parse() -> int | None:
            value = self._single("expires", "Expires")
            # Values above 2**32-1 are clamped as RFC 3261 20.19 allows large deltas.
            if value is None:
                return None
            text = value.strip()
            if not text.isdigit() or not text.isascii():
                raise SipParseError("Bad Request - Invalid Expires")
            return min(int(text[:20]), 2**32 - 1)

        return self._cached("expires", parse)  # type: ignore[no-any-return]

    def tokens(self, name: str) -> list[str]:
        """A token-list header (Require, Supported, Allow, Proxy-Require, ...)."""
        key = canonical_key(name)

        def parse() -> list[str]:
            out: list[str] = []
            for value in self._index.get(key, ()):
                out.extend(parse_token_list(value, display_name(key)))
            return out

        return self._cached("tokens:" + key, parse)  # type: ignore[no-any-return]

    # -- serialization -----------------------------------------------------

    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length is always written last and equal to the body size."""
        lines = [self.start_line()]
        for key, name, value in self._headers:
            if key != "content-length":
                lines.append(name + ": " + value)
        lines.append("Content-Length: " + str(len(self.body)))
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def validate(self) -> None:
        """Parse every header the core interprets; raises :class:`SipParseError`."""
        _ = self.vias, self.from_, self.to, self.call_id, self.cseq
        _ = self.max_forwards, self.content_length, self.content_type
        if self.has("contact"):
            _ = self.contacts
        _ = self.routes, self.record_routes


_KNOWN_KEYS = frozenset(
    canonical_key(name)
    for name in [
        "via",
        "from",
        "to",
        "call-id",
        "cseq",
        "contact",
        "max-forwards",
        "route",
        "record-route",
        "content-type",
        "content-length",
        "content-encoding",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "expires",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
        "event",
        "allow-events",
        "refer-to",
        "referred-by",
        "session-expires",
        "subject",
        "identity",
        "accept-contact",
        "reject-contact",
        "request-disposition",
    ]
)


class SipRequest(SipMessage):
    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: Uri,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    def start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"<SipRequest {self.method} {self.uri}>"


class SipResponse(SipMessage):
    __slots__ = ("reason", "status_code")

    def __init__(
        self,
        status_code: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status_code = status_code
        self.reason = REASON_PHRASES.get(status_code, "") if reason is None else reason

    def start_line(self) -> str:
        return f"SIP/2.0 {self.status_code} {self.reason}"

    @property
    def provisional(self) -> bool:
        return self.status_code < 200

    def __repr__(self) -> str:
        return f"<SipResponse {self.status_code} {self.reason}>"


def build_response(
    request: SipRequest,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response to ``request`` per RFC 3261 8.2.6.2 (Via, From, To, Call-ID, CSeq copied).

    ``to_tag`` is added to To unless the request already carries one. Record-Route
    is copied into responses to dialog-creating requests (RFC 3261 12.1.1).
    """
    # Built directly rather than through add_header: this runs for every response.
    entries: list[tuple[str, str, str]] = []
    index: dict[str, list[str]] = {}
    source = request._index
    vias = source.get("via")
    if vias:
        entries.extend(("via", "Via", value) for value in vias)
        index["via"] = list(vias)
    for key, written in (("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq")):
        values = source.get(key)
        if not values:
            continue
        value = values[0]
        if key == "to" and to_tag is not None and status_code != 100 and request.to.tag is None:
            value = value + ";tag=" + to_tag
        entries.append((key, written, value))
        index[key] = [value]
    if request.method in ("INVITE", "SUBSCRIBE") and 100 < status_code < 300:
        record_routes = source.get("record-route")
        if record_routes:
            entries.extend(("record-route", "Record-Route", value) for value in record_routes)
            index["record-route"] = list(record_routes)
    response = SipResponse(status_code, reason)
    response._headers = entries
    response._index = index
    for name, value in headers:
        response.add_header(name, value)
    response.body = body
    return response
