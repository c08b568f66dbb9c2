"""Typed views of the header fields the SIP core interprets.

Header values are kept as text inside :class:`~.message.SipMessage`; these
classes are what the accessors return after parsing a value. Each parser
raises :class:`SipParseError` with a reason naming the header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import SipParseError
from .grammar import (
    WHITESPACE,
    Params,
    format_params,
    is_host,
    is_token,
    is_word,
    parse_params,
    parse_quoted_string,
    quote_string,
    split_comma_list,
)
from .uri import SipUri, Uri, parse_uri

# RFC 3261 7.3.3 plus the compact forms registered since (RFC 3515, 3841, 3892, 4028, 6665).
COMPACT_NAMES: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How lower-case canonical names are written when we serialize a message.
_DISPLAY_NAMES: dict[str, str] = {
    name: name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Max-Forwards",
        "Route",
        "Record-Route",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Content-Disposition",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Expires",
        "Min-Expires",
        "User-Agent",
        "Server",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authentication-Info",
        "Retry-After",
        "Warning",
        "Date",
        "Subject",
        "Event",
        "Allow-Events",
        "Refer-To",
        "Referred-By",
        "Session-Expires",
        "Min-SE",
        "RSeq",
        "RAck",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Privacy",
        "Reason",
        "Path",
        "Timestamp",
        "Organization",
        "Priority",
        "Identity",
        "Accept-Contact",
        "Reject-Contact",
        "Request-Disposition",
    )
}
_DISPLAY_BY_KEY = {name.lower(): name for name in _DISPLAY_NAMES}


def canonical_key(name: str) -> str:
    """Lower-case long form of a header name: ``"i"`` and ``"CALL-id"`` give ``"call-id"``."""
    key = name.lower()
    if len(key) == 1:
        return COMPACT_NAMES.get(key, key)
    return key


def display_name(key: str) -> str:
    """How a canonical key is written on the wire (``"call-id"`` -> ``"Call-ID"``)."""
    known = _DISPLAY_BY_KEY.get(key)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in key.split("-"))


# ---------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, ...)


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <uri> *(;param)`` or ``addr-spec *(;param)``."""

    uri: Uri
    display_name: str | None = None
    params: Params = field(default_factory=dict, hash=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = dict(self.params)
        params["tag"] = tag
        return NameAddr(self.uri, self.display_name, params)

    def __str__(self) -> str:
        out = ""
        if self.display_name is not None:
            name = self.display_name
            # A run of tokens may stay unquoted; anything else is quoted.
            if name and all(is_token(part) for part in name.split(" ")):
                out = name + " "
            else:
                out = quote_string(name) + " "
        return out + "<" + str(self.uri) + ">" + format_params(self.params)


# display-name = *(token LWS): tokens separated by spaces or tabs.
_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


def parse_name_addr(value: str, what: str = "header") -> NameAddr:
    """Parse one From/To/Contact/Route element (already split on commas)."""
    text = value.strip(WHITESPACE)
    if not text:
        raise SipParseError(f"Bad Request - Empty {what}")
    display: str | None = None
    if text[0] == '"':
        display, after = parse_quoted_string(text, 0)
        rest = text[after:].lstrip(WHITESPACE)
        if not rest.startswith("<"):
            raise SipParseError(f"Bad Request - Invalid {what}")
    else:
        lt = text.find("<")
        if lt == -1:
            return _parse_addr_spec_form(text, what)
        raw_display = text[:lt].strip(WHITESPACE)
        if raw_display:
            if _DISPLAY_TOKENS_RE.fullmatch(raw_display) is None:
                raise SipParseError(f"Bad Request - Invalid display name in {what}")
            display = " ".join(raw_display.split())
        rest = text[lt:]
    gt = rest.find(">")
    if gt == -1:
        raise SipParseError(f"Bad Request - Unterminated <> in {what}")
    uri_text = rest[1:gt]
    if not uri_text or " " in uri_text or "\t" in uri_text or "<" in uri_text:
        raise SipParseError(f"Bad Request - Invalid URI in {what}")
    uri = parse_uri(uri_text)
    tail = rest[gt + 1 :].lstrip(WHITESPACE)
    params: Params = {}
    if tail:
        if tail[0] != ";":
            raise SipParseError(f"Bad Request - Invalid {what}")
        params = parse_params(tail[1:], f"{what} parameter")
    return NameAddr(uri, display, params)


def _parse_addr_spec_form(text: str, what: str) -> NameAddr:
    # Without <>, everything after the first ';' is a header parameter and the
    # URI may not carry '?' headers or ',' (RFC 3261 20.10).
    uri_text, semi, tail = text.partition(";")
    uri_text = uri_text.rstrip(WHITESPACE)
    if "?" in uri_text:
        raise SipParseError(f"Bad Request - URI with headers must be in <> in {what}")
    if not uri_text or " " in uri_text or "\t" in uri_text or "," in uri_text:
        raise SipParseError(f"Bad Request - Invalid URI in {what}")
    uri = parse_uri(uri_text)
    params = parse_params(tail, f"{what} parameter") if semi else {}
    return NameAddr(uri, None, params)


def parse_name_addr_list(value: str, what: str = "header") -> list[NameAddr]:
    return [parse_name_addr(part, what) for part in _non_empty(split_comma_list(value), what)]


@dataclass(slots=True)
class ContactStar:
    """``Contact: *`` (remove all bindings, RFC 3261 10.2.2)."""

    def __str__(self) -> str:
        return "*"


def parse_contacts(value: str) -> list[NameAddr] | ContactStar:
    if value.strip(WHITESPACE) == "*":
        return ContactStar()
    return parse_name_addr_list(value, "Contact")


# ---------------------------------------------------------------------------
# Via


@dataclass(slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host[:port];params``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict, hash=False)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The filled-in rport value, or ``None`` (also when present but empty)."""
        value = self.params.get("rport")
        if value is None or not (value.isascii() and value.isdigit() and len(value) <= 5):
            return None
        return int(value)

    @property
    def wants_rport(self) -> bool:
        return "rport" in self.params

    @property
    def rfc3261_branch(self) -> bool:
        """True for a branch with the magic cookie and something after it (RFC 3261 8.1.1.7)."""
        branch = self.branch
        return branch is not None and len(branch) > 7 and branch.startswith("z9hG4bK")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> Via:
        merged = dict(self.params)
        merged.update(params)
        return Via(self.transport, self.host, self.port, merged)

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


_VIA_FAST_RE = re.compile(
    r"SIP/2\.0/([A-Za-z]+) (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-.]*)(?::([0-9]{1,5}))?(;|$)"
)


def parse_via(value: str) -> Via:
    """Parse one Via element; LWS is allowed around '/' and before ';'."""
    fast = _VIA_FAST_RE.match(value)
    if fast is not None:
        transport, host, port_text, semi = fast.groups()
        port = int(port_text) if port_text is not None else None
        if port is None or port <= 65535:
            params = parse_params(value[fast.end() :], "Via parameter") if semi else {}
            if "branch" in params and not params["branch"]:
                raise SipParseError("Bad Request - Invalid Via branch")
            return Via(transport.upper(), host, port, params)
    name, slash1, rest = value.partition("/")
    version, slash2, rest = rest.partition("/")
    if not slash1 or not slash2:
        raise SipParseError("Bad Request - Invalid Via")
    if name.strip(WHITESPACE).upper() != "SIP" or version.strip(WHITESPACE) != "2.0":
        raise SipParseError("Bad Request - Invalid Via protocol")
    rest = rest.lstrip(WHITESPACE)
    transport_end = 0
    while transport_end < len(rest) and rest[transport_end] not in WHITESPACE:
        transport_end += 1
    transport = rest[:transport_end].upper()
    if not is_token(transport):
        raise SipParseError("Bad Request - Invalid Via transport")
    rest = rest[transport_end:].lstrip(WHITESPACE)
    sent_by, semi, tail = rest.partition(";")
    sent_by = sent_by.rstrip(WHITESPACE)
    host, port = _parse_host_port(sent_by, "Via")
    params = parse_params(tail, "Via parameter") if semi else {}
    if "branch" in params and not params["branch"]:
        raise SipParseError("Bad Request - Invalid Via branch")
    return Via(transport, host, port, params)


def parse_via_list(value: str) -> list[Via]:
    return [parse_via(part) for part in _non_empty(split_comma_list(value), "Via")]


def _parse_host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise SipParseError(f"Bad Request - Invalid {what} host")
        host, after = text[: close + 1], text[close + 1 :]
        has_port = after.startswith(":")
        port_text = after[1:]
        if after and not has_port:
            raise SipParseError(f"Bad Request - Invalid {what} host")
    else:
        host, sep, port_text = text.partition(":")
        has_port = bool(sep)
    host = host.rstrip(WHITESPACE)
    port_text = port_text.strip(WHITESPACE)
    if not is_host(host):
        raise SipParseError(f"Bad Request - Invalid {what} host")
    if not has_port:
        return host, None
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        raise SipParseError(f"Bad Request - Invalid {what} port")
    port = int(port_text)
    if port > 65535:
        raise SipParseError(f"Bad Request - Invalid {what} port")
    return host, port


# ---------------------------------------------------------------------------
# Scalars


@dataclass(slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


MAX_CSEQ = 2**31 - 1


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2:
        raise SipParseError("Bad Request - Invalid CSeq")
    number, method = parts
    if not number.isdigit() or not number.isascii() or len(number) > 10:
        raise SipParseError("Bad Request - Invalid CSeq")
    seq = int(number)
    if seq > MAX_CSEQ:
        raise SipParseError("Bad Request - Invalid CSeq")
    if not is_token(method):
        raise SipParseError("Bad Request - Invalid CSeq method")
    return CSeq(seq, method)


def parse_call_id(value: str) -> str:
    # callid = word [ "@" word ]
    word, at, host = value.partition("@")
    if not word or not is_word(word) or (at and (not host or not is_word(host))):
        raise SipParseError("Bad Request - Invalid Call-ID")
    return value


def parse_uint(value: str, what: str, maximum: int) -> int:
    text = value.strip(WHITESPACE)
    if not text.isdigit() or not text.isascii() or len(text) > 10:
        raise SipParseError(f"Bad Request - Invalid {what}")
    number = int(text)
    if number > maximum:
        raise SipParseError(f"Bad Request - Invalid {what}")
    return number


def parse_token_list(value: str, what: str) -> list[str]:
    """Comma-separated tokens (Require, Supported, Allow, ...); empty elements are skipped."""
    items = [part for part in split_comma_list(value) if part]
    for item in items:
        if not is_token(item):
            raise SipParseError(f"Bad Request - Invalid {what}")
    return items


def parse_media_type(value: str) -> tuple[str, Params]:
    """``type/subtype *(;param)`` -> ("type/subtype" lower-cased, params)."""
    media, semi, tail = value.partition(";")
    main, slash, sub = media.strip(WHITESPACE).partition("/")
    main, sub = main.strip(WHITESPACE), sub.strip(WHITESPACE)
    if not slash or not is_token(main) or not is_token(sub):
        raise SipParseError("Bad Request - Invalid Content-Type")
    params = parse_params(tail, "Content-Type parameter") if semi else {}
    return f"{main.lower()}/{sub.lower()}", params


def _non_empty(parts: list[str], what: str) -> list[str]:
    for part in parts:
        if not part:
            raise SipParseError(f"Bad Request - Empty element in {what}")
    return parts


def is_valid_host(text: str) -> bool:
    return is_host(text)


def require_sip_uri(uri: Uri, what: str) -> SipUri:
    if not isinstance(uri, SipUri):
        raise SipParseError(f"Bad Request - {what} is not a SIP URI")
    return uri
