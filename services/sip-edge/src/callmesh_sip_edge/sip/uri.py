"""SIP/SIPS URIs (RFC 3261 section 19.1) and opaque absolute URIs.

Components are stored unescaped; ``str()`` re-escapes only what the grammar
requires, so ``sip:%75ser@host`` and ``sip:user@host`` parse to equal
objects, as RFC 3261 19.1.4 says they are.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

from .errors import SipParseError

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_UNRESERVED = string.ascii_letters + string.digits + "-_.!~*'()"
_USER_SAFE = _UNRESERVED + "&=+$,;?/"
_PASSWORD_SAFE = _UNRESERVED + "&=+$,"
_PARAM_SAFE = _UNRESERVED + "[]/:&+$"
_HEADER_SAFE = _UNRESERVED + "[]/?:+$"
_OPAQUE_FORBIDDEN = frozenset(' \t\r\n<>"')


def _escape(text: str, safe: str) -> str:
    return quote(text.encode("utf-8", "surrogateescape"), safe=safe)


@dataclass(slots=True)
class SipUri:
    """``sip:`` or ``sips:`` URI; params names are lower-case, values unescaped."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict, hash=False)
    headers: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def loose_route(self) -> bool:
        return "lr" in self.params

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> SipUri:
        merged = dict(self.params)
        merged.update(params)
        return SipUri(
            self.host, self.user, self.password, self.port, self.scheme, merged, dict(self.headers)
        )

    def without_headers(self) -> SipUri:
        return SipUri(self.host, self.user, self.password, self.port, self.scheme, self.params, {})

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                out.append(":" + _escape(self.password, _PASSWORD_SAFE))
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(";" + _escape(name, _PARAM_SAFE))
            if value is not None:
                out.append("=" + _escape(value, _PARAM_SAFE))
        if self.headers:
            out.append(
                "?"
                + "&".join(
                    _escape(k, _HEADER_SAFE) + "=" + _escape(v, _HEADER_SAFE)
                    for k, v in self.headers.items()
                )
            )
        return "".join(out)

    def matches(self, other: Uri) -> bool:
        """URI equality per RFC 3261 19.1.4 (the subset a UA needs)."""
        if not isinstance(other, SipUri):
            return False
        if (
            self.scheme != other.scheme
            or self.user != other.user
            or self.password != other.password
            or self.host.lower() != other.host.lower()
            or self.port != other.port
        ):
            return False
        for name in ("user", "ttl", "method", "maddr", "transport"):
            mine, theirs = self.params.get(name), other.params.get(name)
            if (mine is None) != (theirs is None):
                return False
            if mine is not None and theirs is not None and mine.lower() != theirs.lower():
                return False
        for name in self.params.keys() & other.params.keys():
            mine, theirs = self.params[name], other.params[name]
            if (mine or "").lower() != (theirs or "").lower():
                return False
        return self.headers == other.headers


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of any other scheme (tel, http, urn, ...), kept as scheme + opaque part."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def matches(self, other: Uri) -> bool:
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme.lower() == other.scheme.lower()
            and self.opaque == other.opaque
        )


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or the URI inside a name-addr."""
    scheme, colon, rest = text.partition(":")
    if not colon or not rest or _SCHEME_RE.fullmatch(scheme) is None:
        raise SipParseError("Bad Request - Invalid URI")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip_uri(lowered, rest)
    if any(c in _OPAQUE_FORBIDDEN for c in rest):
        raise SipParseError("Bad Request - Invalid URI")
    return AbsoluteUri(lowered, rest)


_U = r"A-Za-z0-9\-_.!~*'()%"
_USER_CLASS = _U + r"&=+$,;?/"
_PASSWORD_CLASS = _U + r"&=+$,"
_PARAM_CLASS = _U + r"\[\]/:&+$"
_HEADER_CLASS = _U + r"\[\]/?:+$"
_HOSTPORT_TAIL = (
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9\-.]*)(?::([0-9]{1,5}))?"
    rf"((?:;[{_PARAM_CLASS}]+(?:=[{_PARAM_CLASS}]+)?)*)"
    rf"(?:\?([{_HEADER_CLASS}]+=[{_HEADER_CLASS}]*(?:&[{_HEADER_CLASS}]+=[{_HEADER_CLASS}]*)*))?"
)
# Two patterns so that the userinfo part never has to be backtracked over.
_SIP_URI_WITH_USER_RE = re.compile(
    rf"([{_USER_CLASS}]+)(?::([{_PASSWORD_CLASS}]*))?@" + _HOSTPORT_TAIL
)
_SIP_URI_NO_USER_RE = re.compile(_HOSTPORT_TAIL)
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _decode(text: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE_RE.search(text):
        raise SipParseError("Bad Request - Invalid escape in URI")
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        match = _SIP_URI_WITH_USER_RE.fullmatch(rest)
        if match is None:
            raise SipParseError("Bad Request - Invalid URI")
        raw_user, raw_password, host, port_text, raw_params, raw_headers = match.groups()
        user = _decode(raw_user)
        if raw_password is not None:
            password = _decode(raw_password)
    else:
        match = _SIP_URI_NO_USER_RE.fullmatch(rest)
        if match is None:
            raise SipParseError("Bad Request - Invalid URI")
        host, port_text, raw_params, raw_headers = match.groups()
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            raise SipParseError("Bad Request - Invalid URI port")
    params: dict[str, str | None] = {}
    if raw_params:
        for raw in raw_params[1:].split(";"):
            name, eq, value = raw.partition("=")
            params[_decode(name).lower()] = _decode(value) if eq else None
    headers: dict[str, str] = {}
    if raw_headers:
        for raw in raw_headers.split("&"):
            name, _, value = raw.partition("=")
            headers[_decode(name)] = _decode(value)
    return SipUri(host, user, password, port, scheme, params, headers)
