"""SIP transactions (RFC 3261 section 17, with the RFC 6026 Accepted states).

In the style of aioquic's connection object: the :class:`TransactionLayer`
takes parsed messages (or raw bytes) and ``now``, and hands back messages to
send (:meth:`~TransactionLayer.messages_to_send`), the next instant it needs
to be woken (:meth:`~TransactionLayer.next_timer`) and events for the
transaction user (:meth:`~TransactionLayer.next_event`). It never reads a
clock, sleeps, or touches a socket.

Responses to requests received over an unreliable transport go back to the
address the request came from (symmetric response routing, RFC 3581), which
is what phones behind NAT need; over a reliable transport the adapter maps
the destination to the connection the request arrived on.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass
from enum import Enum

from .errors import SipParseError, TransactionError
from .grammar import split_comma_list
from .message import SipMessage, SipRequest, SipResponse, build_response
from .parser import DEFAULT_LIMITS, ParserLimits, build_error_response, parse_message


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a message goes (or came from): transport name and address."""

    transport: str  # "UDP", "TCP", "TLS", "WS", "WSS"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport.upper() != "UDP"


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """RFC 3261 timer values (section 17 and table 4), all in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0
    # UAS core retransmission of 2xx until the ACK arrives (RFC 3261 13.3.1.4).
    retransmit_2xx: bool = True

    @property
    def timeout(self) -> float:
        """64*T1: timers B, F, H, J, L and M."""
        return 64 * self.t1


class TransactionState(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class Outgoing:
    data: bytes
    destination: Destination


# -- events for the transaction user ----------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request; answer it with :meth:`TransactionLayer.send_response`.

    ``merged_with`` is set when the same out-of-dialog request (From tag,
    Call-ID, CSeq) is already being handled under another branch: a forked
    copy that looped back, to be answered 482 (RFC 3261 8.2.2.2).
    """

    transaction: ServerTransaction
    request: SipRequest
    merged_with: ServerTransaction | None = None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    transaction: ClientTransaction
    response: SipResponse


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (its own transaction per RFC 3261) for the dialog layer.

    ``transaction`` is the INVITE server transaction whose 2xx it acknowledges
    when one could be found: by branch (phones such as pyVoIP reuse the INVITE
    branch) or by Call-ID, CSeq number and From tag (which also covers a
    changed To tag). ``None`` means the dialog must match it.
    """

    request: SipRequest
    source: Destination
    transaction: ServerTransaction | None


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response no client transaction owns (e.g. a late 2xx retransmission)."""

    response: SipResponse
    source: Destination


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (no final response), H (no ACK), L (no ACK for a 2xx) or a transport error."""

    transaction: ClientTransaction | ServerTransaction
    reason: str


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """Bytes that did not parse; an error response was queued when one was possible."""

    source: Destination
    error: SipParseError
    answered: bool


TransactionEvent = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | StrayResponse
    | TransactionTimeout
    | MalformedMessage
)

ClientKey = tuple[str, str]
ServerKey = tuple[str, ...]


def _first_via_text(message: SipMessage) -> str:
    first = message.get_all("via")[0]
    return split_comma_list(first)[0] if "," in first else first


def server_key(
    request: SipRequest, method: str | None = None, to_tag: str | None = None
) -> ServerKey:
    """Matching key of RFC 3261 17.2.3 (RFC 2543 fallback when the branch lacks the cookie)."""
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    if via.rfc3261_branch:
        assert via.branch is not None
        return ("3261", via.branch, via.sent_by.lower(), method)
    tag = to_tag if to_tag is not None else request.to.tag
    return (
        "2543",
        str(request.uri),
        tag or "",
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        method,
        _first_via_text(request),
    )


def stamp_via(request: SipRequest, source: Destination) -> None:
    """Add ``received`` (RFC 3261 18.2.1) and fill ``rport`` (RFC 3581) in the top Via.

    Responses copy the Via, so this is how a phone behind NAT learns the
    address and port we saw it from.
    """
    via = request.top_via
    updates: dict[str, str | None] = {}
    if via.wants_rport:
        updates["rport"] = str(source.port)
        updates["received"] = source.host  # RFC 3581 section 4: always with rport
    elif via.host.strip("[]") != source.host.strip("[]"):
        updates["received"] = source.host
    if updates:
        request.replace_top_via(via.with_params(**updates))


def build_ack_for_non_2xx(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK a client INVITE transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3)."""
    ack = SipRequest("ACK", request.uri)
    ack.add_header("Via", _first_via_text(request))
    for route in request.get_all("route"):
        ack.add_header("Route", route)
    ack.add_header("Max-Forwards", "70")
    ack.add_header("From", request.get("from") or "")
    ack.add_header("To", response.get("to") or request.get("to") or "")
    ack.add_header("Call-ID", request.get("call-id") or "")
    ack.add_header("CSeq", f"{request.cseq.seq} ACK")
    return ack


def build_cancel(request: SipRequest) -> SipRequest:
    """CANCEL for a pending INVITE (RFC 3261 9.1): same branch, Request-URI and Route set."""
    if request.method != "INVITE":
        raise TransactionError("only INVITE can be cancelled")
    cancel = SipRequest("CANCEL", request.uri)
    cancel.add_header("Via", _first_via_text(request))
    for route in request.get_all("route"):
        cancel.add_header("Route", route)
    cancel.add_header("Max-Forwards", "70")
    cancel.add_header("From", request.get("from") or "")
    cancel.add_header("To", request.get("to") or "")
    cancel.add_header("Call-ID", request.get("call-id") or "")
    cancel.add_header("CSeq", f"{request.cseq.seq} CANCEL")
    return cancel


class _Transaction:
    __slots__ = ("_layer", "_timers", "destination", "request", "state")

    def __init__(self, layer: TransactionLayer, request: SipRequest, destination: Destination):
        self._layer = layer
        self.request = request
        self.destination = destination
        self.state = TransactionState.TRYING
        self._timers: dict[str, float] = {}

    @property
    def invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def reliable(self) -> bool:
        return self.destination.reliable

    @property
    def terminated(self) -> bool:
        return self.state is TransactionState.TERMINATED

    def _start_timer(self, name: str, deadline: float) -> None:
        self._timers[name] = deadline
        self._layer._schedule(self, name, deadline)

    def _stop_timer(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def timer_deadline(self, name: str) -> float | None:
        return self._timers.get(name)

    def _send(self, data: bytes) -> None:
        self._layer._outbox.append(Outgoing(data, self.destination))

    def _terminate(self) -> None:
        self.state = TransactionState.TERMINATED
        self._timers.clear()
        self._layer._forget(self)

    def _fire(self, name: str, now: float) -> None:
        raise NotImplementedError


class ClientTransaction(_Transaction):
    """Client transaction for one request sent by the transaction user."""

    __slots__ = ("_data", "_interval", "key", "last_response")

    def __init__(self, layer: TransactionLayer, request: SipRequest, destination: Destination):
        super().__init__(layer, request, destination)
        branch = request.top_via.branch
        if not branch or not request.top_via.rfc3261_branch:
            raise TransactionError("client requests need an RFC 3261 branch (use new_branch())")
        self.key: ClientKey = (branch, request.method)
        self.last_response: SipResponse | None = None
        self._data = request.to_bytes()
        self._interval = layer.timers.t1

    def _start(self, now: float) -> None:
        timers = self._layer.timers
        self.state = TransactionState.CALLING if self.invite else TransactionState.TRYING
        self._send(self._data)
        if not self.reliable:
            self._start_timer("A" if self.invite else "E", now + timers.t1)
        self._start_timer("B" if self.invite else "F", now + timers.timeout)

    def _fire(self, name: str, now: float) -> None:
        timers = self._layer.timers
        if name == "A":
            self._send(self._data)
            self._interval *= 2
            self._start_timer("A", now + self._interval)
        elif name == "E":
            self._send(self._data)
            if self.state is TransactionState.PROCEEDING:
                self._interval = timers.t2
            else:
                self._interval = min(2 * self._interval, timers.t2)
            self._start_timer("E", now + self._interval)
        elif name in ("B", "F"):
            self._layer._events.append(TransactionTimeout(self, f"timer {name}"))
            self._terminate()
        elif name == "cancelled":
            if self.state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                self._layer._events.append(
                    TransactionTimeout(self, "no final response 64*T1 after CANCEL")
                )
                self._terminate()
        else:  # D, K, M: the wait for retransmissions is over
            self._terminate()

    def _receive(self, response: SipResponse, now: float) -> None:
        timers = self._layer.timers
        code = response.status_code
        state = self.state
        events = self._layer._events
        if self.invite:
            if state in (TransactionState.CALLING, TransactionState.PROCEEDING):
                self.last_response = response
                if code < 200:
                    self.state = TransactionState.PROCEEDING
                    self._stop_timer("A", "B")
                elif code < 300:
                    self.state = TransactionState.ACCEPTED
                    self._stop_timer("A", "B")
                    self._start_timer("M", now + timers.timeout)
                else:
                    self.state = TransactionState.COMPLETED
                    self._stop_timer("A", "B")
                    self._send(build_ack_for_non_2xx(self.request, response).to_bytes())
                    wait = 0.0 if self.reliable else timers.timer_d
                    if wait:
                        self._start_timer("D", now + wait)
                events.append(ResponseReceived(self, response))
                if self.state is TransactionState.COMPLETED and not self._timers:
                    self._terminate()
            elif state is TransactionState.ACCEPTED and 200 <= code < 300:
                # Each 2xx retransmission goes up: the UAC core ACKs it again.
                events.append(ResponseReceived(self, response))
            elif state is TransactionState.COMPLETED and code >= 300:
                self._send(build_ack_for_non_2xx(self.request, response).to_bytes())
            return
        if state in (TransactionState.TRYING, TransactionState.PROCEEDING):
            self.last_response = response
            if code < 200:
                self.state = TransactionState.PROCEEDING
            else:
                self.state = TransactionState.COMPLETED
                self._stop_timer("E", "F")
                if not self.reliable:
                    self._start_timer("K", now + timers.t4)
            events.append(ResponseReceived(self, response))
            if self.state is TransactionState.COMPLETED and self.reliable:
                self._terminate()


class ServerTransaction(_Transaction):
    """Server transaction for one request received from the network."""

    __slots__ = ("_interval", "_last_data", "ack_received", "key", "last_response")

    def __init__(
        self,
        layer: TransactionLayer,
        request: SipRequest,
        source: Destination,
        key: ServerKey,
    ):
        super().__init__(layer, request, source)
        self.key = key
        self.last_response: SipResponse | None = None
        self._last_data: bytes | None = None
        self._interval = layer.timers.t1
        self.ack_received = False
        self.state = TransactionState.PROCEEDING if self.invite else TransactionState.TRYING

    def _retransmission(self) -> None:
        """The same request arrived again: resend the last response, if any (17.2.1, 17.2.2)."""
        if self.state is TransactionState.ACCEPTED:
            return  # RFC 6026 8.7: absorbed; the 2xx timer keeps retransmitting
        if self._last_data is not None and self.state in (
            TransactionState.PROCEEDING,
            TransactionState.COMPLETED,
        ):
            self._send(self._last_data)

    def _respond(self, response: SipResponse, now: float) -> None:
        timers = self._layer.timers
        code = response.status_code
        if self.state not in (TransactionState.TRYING, TransactionState.PROCEEDING):
            raise TransactionError(f"cannot send {code} in state {self.state.value}")
        data = response.to_bytes()
        self.last_response = response
        self._last_data = data
        self._send(data)
        if code < 200:
            self.state = TransactionState.PROCEEDING
            return
        if not self.invite:
            self.state = TransactionState.COMPLETED
            if self.reliable:
                self._terminate()
            else:
                self._start_timer("J", now + timers.timeout)
            return
        if code < 300:
            self.state = TransactionState.ACCEPTED
            self._layer._accepted_invites[self._ack_index_key()] = self
            self._start_timer("L", now + timers.timeout)
            if not self.reliable and timers.retransmit_2xx:
                self._start_timer("2xx", now + timers.t1)
        else:
            self.state = TransactionState.COMPLETED
            if not self.reliable:
                self._start_timer("G", now + timers.t1)
            self._start_timer("H", now + timers.timeout)

    def _merge_key(self) -> tuple[str, str, int, str]:
        request = self.request
        return (request.from_.tag or "", request.call_id, request.cseq.seq, request.method)

    def _ack_index_key(self) -> tuple[str, int, str]:
        return (self.request.call_id, self.request.cseq.seq, self.request.from_.tag or "")

    def _receive_ack(self, ack: SipRequest, source: Destination, now: float) -> None:
        timers = self._layer.timers
        if self.state is TransactionState.COMPLETED:
            self.state = TransactionState.CONFIRMED
            self._stop_timer("G", "H")
            if self.reliable:
                self._terminate()
            else:
                self._start_timer("I", now + timers.t4)
        elif self.state is TransactionState.ACCEPTED and not self.ack_received:
            self.ack_received = True
            self._stop_timer("2xx")
            self._layer._events.append(AckReceived(ack, source, self))
        # CONFIRMED, PROCEEDING: absorbed

    def _fire(self, name: str, now: float) -> None:
        timers = self._layer.timers
        if name in ("G", "2xx"):
            if self._last_data is not None:
                self._send(self._last_data)
            self._interval = min(2 * self._interval, timers.t2)
            self._start_timer(name, now + self._interval)
        elif name == "H":
            self._layer._events.append(TransactionTimeout(self, "timer H: no ACK"))
            self._terminate()
        elif name == "L":
            if not self.ack_received:
                self._layer._events.append(TransactionTimeout(self, "timer L: no ACK for 2xx"))
            self._terminate()
        else:  # I, J
            self._terminate()


class TransactionLayer:
    """Owns every client and server transaction of one SIP endpoint."""

    def __init__(
        self,
        timers: TimerSettings | None = None,
        *,
        auto_trying: bool = True,
        stamp_received: bool = True,
        limits: ParserLimits = DEFAULT_LIMITS,
    ) -> None:
        self.timers = timers or TimerSettings()
        # Write received/rport into the top Via of every request we receive.
        self._stamp_received = stamp_received
        # Answer INVITEs with 100 Trying at once so that UDP retransmissions stop (17.2.1).
        self._auto_trying = auto_trying
        self._limits = limits
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._accepted_invites: dict[tuple[str, int, str], ServerTransaction] = {}
        # Live out-of-dialog server transactions by (From tag, Call-ID, CSeq), for 8.2.2.2.
        self._out_of_dialog: dict[tuple[str, str, int, str], ServerTransaction] = {}
        self._heap: list[tuple[float, int, _Transaction, str]] = []
        self._sequence = itertools.count()
        self._outbox: list[Outgoing] = []
        self._events: deque[TransactionEvent] = deque()

    # -- outputs ---------------------------------------------------------

    def messages_to_send(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        heap = self._heap
        while heap:
            deadline, _, transaction, name = heap[0]
            if transaction._timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)  # stale entry: the timer was stopped or restarted
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, transaction, name = heapq.heappop(heap)
            if transaction._timers.get(name) != deadline:
                continue
            del transaction._timers[name]
            transaction._fire(name, now)

    # -- inputs ----------------------------------------------------------

    def receive_data(self, data: bytes, source: Destination, now: float) -> None:
        """Parse a datagram (or a framed stream message) and process it.

        Unparseable requests get their error response queued (400 with the
        reason, or 505/513); a :class:`MalformedMessage` event reports them.
        """
        try:
            message = parse_message(data, stream=source.reliable, limits=self._limits)
        except SipParseError as error:
            answer = build_error_response(data, error)
            if answer is not None:
                self._outbox.append(Outgoing(answer, source))
            self._events.append(MalformedMessage(source, error, answer is not None))
            return
        self.receive(message, source, now)

    def receive(self, message: SipRequest | SipResponse, source: Destination, now: float) -> None:
        if isinstance(message, SipResponse):
            self._receive_response(message, source, now)
        else:
            self._receive_request(message, source, now)

    def _receive_response(self, response: SipResponse, source: Destination, now: float) -> None:
        branch = response.top_via.branch
        client = self._clients.get((branch or "", response.cseq.method))
        if client is None:
            self._events.append(StrayResponse(response, source))
            return
        client._receive(response, now)

    def _receive_request(self, request: SipRequest, source: Destination, now: float) -> None:
        if self._stamp_received:
            stamp_via(request, source)
        if request.method == "ACK":
            self._receive_ack(request, source, now)
            return
        key = server_key(request)
        existing = self._servers.get(key)
        if existing is not None:
            existing._retransmission()
            return
        transaction = ServerTransaction(self, request, source, key)
        self._servers[key] = transaction
        merged_with: ServerTransaction | None = None
        if request.to.tag is None and request.method != "CANCEL":
            merge_key = transaction._merge_key()
            merged_with = self._out_of_dialog.get(merge_key)
            if merged_with is None:
                self._out_of_dialog[merge_key] = transaction
        if transaction.invite and self._auto_trying:
            transaction._respond(build_response(request, 100), now)
        self._events.append(RequestReceived(transaction, request, merged_with))

    def _receive_ack(self, ack: SipRequest, source: Destination, now: float) -> None:
        key = server_key(ack)
        transaction = self._servers.get(key)
        if transaction is None and key[0] == "2543":
            # RFC 2543 ACK: the INVITE had no To tag; the ACK carries ours.
            candidate = self._servers.get(server_key(ack, to_tag=""))
            last = candidate.last_response if candidate is not None else None
            if last is not None and last.to.tag == ack.to.tag:
                transaction = candidate
        if transaction is None or not transaction.invite:
            # An ACK for a 2xx is its own transaction; find the INVITE it belongs to.
            transaction = self._accepted_invites.get(
                (ack.call_id, ack.cseq.seq, ack.from_.tag or "")
            )
            if transaction is not None:
                transaction._receive_ack(ack, source, now)
            else:
                self._events.append(AckReceived(ack, source, None))
            return
        transaction._receive_ack(ack, source, now)

    def send_request(
        self, request: SipRequest, destination: Destination, now: float
    ) -> ClientTransaction:
        """Start a client transaction (not for ACK: use :meth:`send_stateless`)."""
        if request.method == "ACK":
            raise TransactionError("ACK is not sent through a client transaction")
        transaction = ClientTransaction(self, request, destination)
        if transaction.key in self._clients:
            raise TransactionError("a client transaction with this branch already exists")
        self._clients[transaction.key] = transaction
        transaction._start(now)
        if request.method == "CANCEL":
            # RFC 3261 9.1: give up on the INVITE 64*T1 after cancelling it if no
            # final response arrives (the transaction would otherwise live forever).
            invite = self._clients.get((transaction.key[0], "INVITE"))
            if invite is not None and invite.state in (
                TransactionState.CALLING,
                TransactionState.PROCEEDING,
            ):
                invite._start_timer("cancelled", now + self.timers.timeout)
        return transaction

    def send_response(
        self, transaction: ServerTransaction, response: SipResponse, now: float
    ) -> None:
        transaction._respond(response, now)

    def send_stateless(self, message: SipMessage, destination: Destination) -> None:
        """Send outside any transaction: ACK for 2xx, responses to stray requests."""
        self._outbox.append(Outgoing(message.to_bytes(), destination))

    def transport_error(self, transaction: ClientTransaction | ServerTransaction) -> None:
        """The adapter could not deliver this transaction's message (17.1.4, 17.2.4)."""
        if transaction.terminated:
            return
        self._events.append(TransactionTimeout(transaction, "transport error"))
        transaction._terminate()

    # -- look-ups --------------------------------------------------------

    def find_invite_for_cancel(self, cancel: SipRequest) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 9.2)."""
        return self._servers.get(server_key(cancel, method="INVITE"))

    def client_transaction(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)

    # -- called by transactions -----------------------------------------

    def _schedule(self, transaction: _Transaction, name: str, deadline: float) -> None:
        heapq.heappush(self._heap, (deadline, next(self._sequence), transaction, name))

    def _forget(self, transaction: _Transaction) -> None:
        if isinstance(transaction, ClientTransaction):
            if self._clients.get(transaction.key) is transaction:
                del self._clients[transaction.key]
        elif isinstance(transaction, ServerTransaction):
            if self._servers.get(transaction.key) is transaction:
                del self._servers[transaction.key]
            merge_key = transaction._merge_key()
            if self._out_of_dialog.get(merge_key) is transaction:
                del self._out_of_dialog[merge_key]
            if transaction.invite and transaction.last_response is not None:
                index_key = transaction._ack_index_key()
                if self._accepted_invites.get(index_key) is transaction:
                    del self._accepted_invites[index_key]
