"""Checks a UAS applies to a well-formed request before processing it (RFC 3261 8.2).

``check_request`` returns the rejection to send, or ``None`` when the request
may proceed. It covers what does not depend on configuration: method support
(405/501), CSeq/method agreement (400), URI scheme (416), Require (420),
Content-Type (415), Accept (406), Max-Forwards for requests that would be
forwarded (483), and REGISTER's To (400).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from .message import SipRequest
from .uri import SipUri

# Methods defined by RFC 3261 and its extensions; anything else gets 501.
KNOWN_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)
EDGE_METHODS = frozenset(
    {"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE", "PRACK"}
)
# Extensions (option tags) the edge supports.
EDGE_EXTENSIONS = frozenset({"timer", "replaces", "path", "outbound", "100rel"})
# Requests the edge answers itself even at Max-Forwards 0 (RFC 3261 16.3 step 2, RFC 4475 3.3.?).
LOCAL_METHODS = frozenset({"OPTIONS", "REGISTER", "ACK", "CANCEL"})
BODY_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK", "BYE", "INFO", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Rejection:
    status_code: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def check_request(
    request: SipRequest,
    *,
    allowed_methods: Collection[str] = EDGE_METHODS,
    supported_extensions: Collection[str] = EDGE_EXTENSIONS,
    accepted_content_types: Collection[str] = ("application/sdp", "application/dtmf-relay"),
) -> Rejection | None:
    method = request.method
    if method not in KNOWN_METHODS:
        return Rejection(501, "Not Implemented", [("Allow", ", ".join(sorted(allowed_methods)))])
    if request.cseq.method != method:
        return Rejection(400, "Bad Request - CSeq method does not match the request")
    if method not in allowed_methods:
        return Rejection(405, "Method Not Allowed", [("Allow", ", ".join(sorted(allowed_methods)))])
    if not isinstance(request.uri, SipUri):
        return Rejection(416, "Unsupported URI Scheme")
    if method not in ("ACK", "CANCEL"):
        unsupported = [tag for tag in request.tokens("require") if tag not in supported_extensions]
        if unsupported:
            return Rejection(420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
    if request.body and method in BODY_METHODS:
        content_type = request.content_type
        if content_type is None or content_type not in accepted_content_types:
            return Rejection(
                415,
                "Unsupported Media Type",
                [("Accept", ", ".join(accepted_content_types))],
            )
    if method in ("INVITE", "OPTIONS") and request.has("accept"):
        accepted = [part.split(";")[0].strip().lower() for part in request.get_list("accept")]
        if accepted and not any(a in ("application/sdp", "application/*", "*/*") for a in accepted):
            return Rejection(406, "Not Acceptable")
    if method == "REGISTER" and not isinstance(request.to.uri, SipUri):
        return Rejection(400, "Bad Request - To is not a SIP URI")
    if request.max_forwards == 0 and method not in LOCAL_METHODS:
        return Rejection(483, "Too Many Hops")
    return None
