"""Dialogs (RFC 3261 section 12): state from an INVITE and its responses,
and construction of in-dialog requests (BYE, re-INVITE, UPDATE, INFO, ACK for 2xx).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from .errors import DialogError
from .headers import NameAddr
from .message import SipRequest, SipResponse, new_branch
from .uri import SipUri, Uri

# Requests whose Contact (and 2xx Contact) replaces the remote target (RFC 3261 12.2, RFC 3311).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


def via_value(
    transport: str, host: str, port: int | None, *, branch: str | None = None, rport: bool = True
) -> str:
    """A Via header value for a request we send (fresh branch unless one is given)."""
    sent_by = host if port is None else f"{host}:{port}"
    value = f"SIP/2.0/{transport.upper()} {sent_by};branch={branch or new_branch()}"
    return value + ";rport" if rport else value


class DialogState(Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


DialogId = tuple[str, str, str]  # Call-ID, local tag, remote tag


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr  # without tag
    remote_uri: NameAddr  # without tag
    remote_target: Uri
    local_contact: str
    route_set: list[NameAddr] = field(default_factory=list)
    local_seq: int = 0
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    # CSeq number of the last INVITE we answered with 2xx (to match its ACK).
    invite_seq: int | None = None

    @property
    def id(self) -> DialogId:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- creation --------------------------------------------------------

    @classmethod
    def from_uac_response(
        cls, request: SipRequest, response: SipResponse, *, local_contact: str
    ) -> Dialog:
        """Dialog of the UAC from a 101-299 response to its INVITE (RFC 3261 12.1.2)."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise DialogError("response without To tag cannot create a dialog")
        local_tag = request.from_.tag
        if local_tag is None:
            raise DialogError("request without From tag")
        contact = response.contact
        if contact is None:
            raise DialogError("dialog-creating response without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(response.to),
            remote_target=contact.uri,
            local_contact=local_contact,
            route_set=list(reversed(response.record_routes)),
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=isinstance(request.uri, SipUri) and request.uri.secure,
            state=DialogState.EARLY if response.status_code < 200 else DialogState.CONFIRMED,
            invite_seq=request.cseq.seq,
        )

    @classmethod
    def from_uas_request(
        cls,
        request: SipRequest,
        *,
        local_tag: str,
        local_contact: str,
        confirmed: bool = False,
    ) -> Dialog:
        """Dialog of the UAS for an INVITE it answers with 1xx/2xx (RFC 3261 12.1.1)."""
        remote_tag = request.from_.tag
        if remote_tag is None:
            # RFC 2543 peers may omit it; an empty tag still identifies the dialog.
            remote_tag = ""
        contact = request.contact
        if contact is None:
            raise DialogError("dialog-creating request without Contact")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=contact.uri,
            local_contact=local_contact,
            route_set=list(request.record_routes),
            local_seq=0,
            remote_seq=request.cseq.seq,
            secure=isinstance(request.uri, SipUri) and request.uri.secure,
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            invite_seq=request.cseq.seq,
        )

    # -- matching --------------------------------------------------------

    @staticmethod
    def id_for_incoming_request(request: SipRequest) -> DialogId:
        return (request.call_id, request.to.tag or "", request.from_.tag or "")

    @staticmethod
    def id_for_incoming_response(response: SipResponse) -> DialogId:
        return (response.call_id, response.from_.tag or "", response.to.tag or "")

    def matches_ack(self, ack: SipRequest) -> bool:
        """Whether ``ack`` acknowledges our 2xx to this dialog's INVITE.

        Matches on Call-ID, the caller's From tag and the INVITE's CSeq number but
        not on the To tag: pyVoIP sends its ACK with a freshly invented To tag.
        """
        return (
            ack.method == "ACK"
            and ack.call_id == self.call_id
            and (ack.from_.tag or "") == self.remote_tag
            and ack.cseq.seq == self.invite_seq
        )

    # -- updates ---------------------------------------------------------

    def receive_request(self, request: SipRequest) -> None:
        """Check and record an in-dialog request (RFC 3261 12.2.2).

        Raises :class:`DialogError` for an out-of-order CSeq (answer 500).
        """
        if request.method in ("ACK", "CANCEL"):
            return
        seq = request.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            raise DialogError("CSeq lower than the last one in this dialog")
        self.remote_seq = seq
        if request.method == "INVITE":
            self.invite_seq = seq
        if request.method == "BYE":
            self.state = DialogState.TERMINATED

    def refresh_target(self, message: SipRequest | SipResponse) -> None:
        """Adopt the Contact of a target-refresh request or its 2xx as the remote target."""
        contact = message.contact
        if contact is not None:
            self.remote_target = contact.uri

    def receive_response(self, request: SipRequest, response: SipResponse) -> None:
        """Update from a response to a request we sent in this dialog."""
        code = response.status_code
        method = request.method
        if method == "INVITE" and 200 <= code < 300:
            if self.state is DialogState.EARLY:
                # RFC 3261 13.2.2.4: the 2xx fixes the route set of an early dialog.
                self.route_set = list(reversed(response.record_routes))
                self.state = DialogState.CONFIRMED
            self.refresh_target(response)
        elif method in TARGET_REFRESH_METHODS and 200 <= code < 300:
            self.refresh_target(response)
        elif method == "INVITE" and code >= 300 and self.state is DialogState.EARLY:
            self.state = DialogState.TERMINATED
        if code in (481, 408) and method != "INVITE":
            # RFC 3261 12.2.1.2: the dialog is gone at the other end.
            self.state = DialogState.TERMINATED
        if method == "BYE" and code >= 200:
            self.state = DialogState.TERMINATED

    # -- building requests ----------------------------------------------

    def _request_uri_and_routes(self) -> tuple[Uri, list[str]]:
        routes = self.route_set
        if not routes:
            return self.remote_target, []
        first = routes[0].uri
        if isinstance(first, SipUri) and first.loose_route:
            return self.remote_target, [str(route) for route in routes]
        # Strict routing (RFC 3261 12.2.1.1): the first route becomes the Request-URI.
        request_uri: Uri = first.without_headers() if isinstance(first, SipUri) else first
        rest = [str(route) for route in routes[1:]]
        rest.append(f"<{self.remote_target}>")
        return request_uri, rest

    def create_request(
        self,
        method: str,
        *,
        via: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
    ) -> SipRequest:
        """A new in-dialog request with the next local CSeq (not for ACK or CANCEL)."""
        if method in ("ACK", "CANCEL"):
            raise DialogError(f"{method} is built with create_ack / build_cancel")
        if self.state is DialogState.TERMINATED:
            raise DialogError("dialog is terminated")
        self.local_seq += 1
        if method == "INVITE":
            self.invite_seq = self.local_seq
        request = self._base_request(method, via, self.local_seq, max_forwards)
        if method in TARGET_REFRESH_METHODS:
            request.add_header("Contact", self.local_contact)
        for name, value in headers:
            request.add_header(name, value)
        if body:
            request.add_header("Content-Type", content_type or "application/sdp")
            request.body = body
        return request

    def create_ack(
        self,
        *,
        via: str,
        body: bytes = b"",
        content_type: str | None = None,
        cseq: int | None = None,
    ) -> SipRequest:
        """ACK for a 2xx to our INVITE (RFC 3261 13.2.2.4): CSeq number of the INVITE."""
        seq = cseq if cseq is not None else self.invite_seq
        if seq is None:
            raise DialogError("no INVITE to acknowledge")
        request = self._base_request("ACK", via, seq, 70)
        if body:
            request.add_header("Content-Type", content_type or "application/sdp")
            request.body = body
        return request

    def _base_request(self, method: str, via: str, seq: int, max_forwards: int) -> SipRequest:
        request_uri, routes = self._request_uri_and_routes()
        request = SipRequest(method, request_uri)
        request.add_header("Via", via)
        request.add_header("Max-Forwards", str(max_forwards))
        for route in routes:
            request.add_header("Route", route)
        request.add_header("From", str(self.local_uri.with_tag(self.local_tag)))
        remote = self.remote_uri.with_tag(self.remote_tag) if self.remote_tag else self.remote_uri
        request.add_header("To", str(remote))
        request.add_header("Call-ID", self.call_id)
        request.add_header("CSeq", f"{seq} {method}")
        return request


def _without_tag(name_addr: NameAddr) -> NameAddr:
    params = {k: v for k, v in name_addr.params.items() if k != "tag"}
    return NameAddr(name_addr.uri, name_addr.display_name, params)
