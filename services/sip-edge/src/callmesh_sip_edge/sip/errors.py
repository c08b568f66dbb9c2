"""Exceptions raised by the sans-I/O SIP core.

Each parser raises exactly one exception type so that adapters can answer
"anything we could not understand" with one ``except`` clause and a precise
response instead of a crash.
"""

from __future__ import annotations


class SipParseError(ValueError):
    """A SIP message (or one of its header values) does not follow RFC 3261.

    ``reason`` is short and fit to be sent as the reason phrase of the
    response (``"Bad Request - Invalid CSeq"``); ``status_code`` is the
    response the edge should send for a request (400 unless the problem has
    its own code, e.g. 505 for an unknown SIP version or 513 for a message
    that is too large).
    """

    def __init__(self, reason: str, status_code: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status_code = status_code


class SdpError(ValueError):
    """An SDP body cannot be parsed, or an offer cannot be answered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DigestError(ValueError):
    """A WWW-/Proxy-Authenticate or Authorization header is malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransactionError(RuntimeError):
    """The transaction user asked for something the state machine forbids."""


class DialogError(RuntimeError):
    """A request does not fit the dialog it was matched to."""


class SipFramingError(SipParseError):
    """A stream (TCP/TLS) could not be split into messages; the connection must close.

    ``head`` is the header block of the offending message (possibly empty) so
    that the adapter can still answer ``400`` before closing.
    """

    def __init__(self, reason: str, head: bytes = b"", status_code: int = 400) -> None:
        super().__init__(reason, status_code)
        self.head = head
