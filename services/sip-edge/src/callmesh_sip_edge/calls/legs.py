"""Call legs: one class per dialog state per role, in the style of sippy's UAS/UAC states.

A leg is one SIP dialog of a call: the caller's (:class:`UasLeg`, label ``a``) or one the call
placed (:class:`UacLeg`, ``b1``, ``b2``, ...). Its behaviour lives in its current state object
(:class:`UasTrying`, :class:`UasRinging`, :class:`UasConnected`, :class:`UasDisconnected`;
:class:`UacCalling`, :class:`UacRinging`, :class:`UacCancelling`, :class:`UacConnected`,
:class:`UacDisconnected`), which handles SIP input and the controller's commands and moves the
leg to the next state. What the controller needs to know leaves a leg as a typed event
(:class:`Try`, :class:`Ring`, :class:`Connect`, :class:`Disconnect`, :class:`Fail`); the
controller never looks at SIP messages of a leg's INVITE itself.

In-dialog requests other than BYE (re-INVITE for hold/unhold, UPDATE, INFO) are handed to the
controller (:meth:`LegListener.relay_request`), which passes them to the peer leg with
:meth:`Leg.send_in_dialog` and answers the original with the peer's final response.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..sip.dialog import Dialog, DialogState, via_value
from ..sip.errors import DialogError, SipParseError, TransactionError
from ..sip.message import SipRequest, SipResponse, build_response, new_branch
from ..sip.transaction import (
    ClientTransaction,
    Destination,
    ServerTransaction,
    build_cancel,
)

ResponseCallback = Callable[[SipResponse], None]


# -- typed events a leg reports to its controller ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Try:
    """The leg's INVITE is on its way (or arrived)."""

    leg: Leg


@dataclass(frozen=True, slots=True)
class Ring:
    """The far end rings (180) or sends early media (183)."""

    leg: Leg
    status: int
    sdp: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    """The far end answered; ``sdp`` is its answer."""

    leg: Leg
    sdp: bytes


@dataclass(frozen=True, slots=True)
class Disconnect:
    """The leg ended after it was set up (BYE) or, for the caller, by CANCEL before answer."""

    leg: Leg
    by_remote: bool
    cancelled: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fail:
    """The leg's INVITE failed: a final 3xx-6xx, a timeout (408) or a transport error (503)."""

    leg: Leg
    status: int
    reason: str


LegEvent = Try | Ring | Connect | Disconnect | Fail


class LegListener(Protocol):
    def leg_event(self, event: LegEvent) -> None: ...

    def relay_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        """An in-dialog request other than BYE to pass to the peer leg."""


class SipPort(Protocol):
    """What a leg needs from the edge: sending, and the addresses it advertises."""

    @property
    def transport(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def contact(self) -> str: ...

    def send_request(
        self, request: SipRequest, destination: Destination, owner: Leg
    ) -> ClientTransaction | None: ...

    def send_response(self, transaction: ServerTransaction, response: SipResponse) -> None: ...

    def send_stateless(self, message: SipRequest, destination: Destination) -> None: ...

    def forget(self, leg: Leg) -> None: ...

    def now(self) -> float: ...


class Leg:
    """What both roles share: identity, dialog, destination and the in-dialog helpers."""

    state: LegState

    def __init__(
        self, *, label: str, sip: SipPort, listener: LegListener, destination: Destination
    ) -> None:
        self.label = label
        self.sip = sip
        self.listener = listener
        self.destination = destination
        self.dialog: Dialog | None = None
        self.sip_call_id = ""
        self.started = sip.now()
        self.first_ring: float | None = None
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.final_status = 0
        self._pending: dict[tuple[str, str], ResponseCallback] = {}

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def set_state(self, state: LegState) -> None:
        self.state = state
        if isinstance(state, (UasDisconnected, UacDisconnected)) and self.ended_at is None:
            self.ended_at = self.sip.now()
            if not self._pending:
                self.sip.forget(self)

    def emit(self, event: LegEvent) -> None:
        self.listener.leg_event(event)

    def via(self) -> str:
        return via_value(self.sip.transport, self.sip.host, self.sip.port, branch=new_branch())

    def send_in_dialog(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        on_response: ResponseCallback | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> bool:
        """Send ``method`` in this leg's dialog; False when there is no dialog to send in."""
        dialog = self.dialog
        if dialog is None:
            return False
        try:
            request = dialog.create_request(
                method,
                via=self.via(),
                body=body,
                content_type=content_type,
                headers=headers or [],
            )
        except DialogError:
            return False
        transaction = self.sip.send_request(request, self.destination, self)
        if transaction is None:
            return False
        if on_response is not None:
            self._pending[transaction.key] = on_response
        return True

    def respond(
        self,
        transaction: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> None:
        extra = list(headers or [])
        if body:
            extra.append(("Content-Type", content_type or "application/sdp"))
        response = build_response(
            transaction.request, status, reason, to_tag=to_tag, headers=extra, body=body
        )
        self.sip.send_response(transaction, response)

    def on_response(self, transaction: ClientTransaction, response: SipResponse) -> None:
        callback = self._pending.get(transaction.key)
        if callback is not None:
            if response.status_code >= 200:
                del self._pending[transaction.key]
                self._after_pending()
            callback(response)
            return
        self.state.on_response(self, transaction, response)

    def on_client_timeout(self, transaction: ClientTransaction, reason: str) -> None:
        callback = self._pending.pop(transaction.key, None)
        if callback is not None:
            self._after_pending()
            callback(build_response(transaction.request, 408, "Request Timeout"))
            return
        self.state.on_timeout(self, transaction, reason)

    def _after_pending(self) -> None:
        if self.ended and not self._pending:
            self.sip.forget(self)

    def on_request(self, transaction: ServerTransaction, request: SipRequest) -> None:
        dialog = self.dialog
        if dialog is not None:
            try:
                dialog.receive_request(request)
            except DialogError:
                self.respond(transaction, 500, "Server Internal Error - CSeq out of order")
                return
        self.state.on_request(self, transaction, request)

    def answer_bye(self, transaction: ServerTransaction) -> None:
        self.respond(transaction, 200)

    def send_bye(self) -> None:
        self.send_in_dialog("BYE")


class LegState:
    """Default behaviour of every state: ignore what does not apply."""

    name = "state"

    def on_response(self, leg: Leg, transaction: ClientTransaction, response: SipResponse) -> None:
        return

    def on_timeout(self, leg: Leg, transaction: ClientTransaction, reason: str) -> None:
        return

    def on_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.method == "BYE":
            leg.answer_bye(transaction)
            return
        leg.respond(transaction, 481)

    def __repr__(self) -> str:
        return f"<{self.name}>"


# -- the caller's leg (UAS role) ------------------------------------------------------------


class UasLeg(Leg):
    """The leg of the INVITE that created the call."""

    state: UasState

    def __init__(
        self,
        *,
        sip: SipPort,
        listener: LegListener,
        transaction: ServerTransaction,
        local_tag: str,
    ) -> None:
        super().__init__(label="a", sip=sip, listener=listener, destination=transaction.destination)
        self.invite = transaction
        self.request = transaction.request
        self.local_tag = local_tag
        self.sip_call_id = self.request.call_id
        self.sdp_offer = self.request.body
        self.ack_received = False
        self.state = UasTrying()

    def _ensure_dialog(self, confirmed: bool) -> None:
        if self.dialog is None:
            try:
                self.dialog = Dialog.from_uas_request(
                    self.request,
                    local_tag=self.local_tag,
                    local_contact=self.sip.contact,
                    confirmed=confirmed,
                )
            except (DialogError, SipParseError):
                self.dialog = None

    # commands from the controller
    def ring(self, status: int, sdp: bytes = b"") -> None:
        self.state.ring(self, status, sdp)

    def answer(self, sdp: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.state.answer(self, sdp, headers or [])

    def reject(
        self, status: int, reason: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.state.reject(self, status, reason, headers or [])

    def hangup(self) -> None:
        self.state.hangup(self)

    # input from the network
    def on_cancel(self) -> None:
        self.state.on_cancel(self)

    def on_ack(self, ack: SipRequest) -> None:
        self.state.on_ack(self, ack)

    def on_server_timeout(self, transaction: ServerTransaction, reason: str) -> None:
        self.state.on_server_timeout(self, transaction, reason)


class UasState(LegState):
    def ring(self, leg: UasLeg, status: int, sdp: bytes) -> None:
        return

    def answer(self, leg: UasLeg, sdp: bytes, headers: list[tuple[str, str]]) -> None:
        return

    def reject(
        self, leg: UasLeg, status: int, reason: str | None, headers: list[tuple[str, str]]
    ) -> None:
        return

    def hangup(self, leg: UasLeg) -> None:
        return

    def on_cancel(self, leg: UasLeg) -> None:
        return

    def on_ack(self, leg: UasLeg, ack: SipRequest) -> None:
        return

    def on_server_timeout(self, leg: UasLeg, transaction: ServerTransaction, reason: str) -> None:
        return


class UasTrying(UasState):
    """INVITE received, 100 Trying sent (the transaction layer sends it at once)."""

    name = "uas-trying"

    def ring(self, leg: UasLeg, status: int, sdp: bytes) -> None:
        leg._ensure_dialog(confirmed=False)
        if leg.first_ring is None:
            leg.first_ring = leg.sip.now()
        try:
            leg.respond(
                leg.invite,
                status,
                body=sdp,
                to_tag=leg.local_tag,
                headers=[("Contact", leg.sip.contact)],
            )
        except TransactionError:
            return
        if not isinstance(leg.state, UasRinging):
            leg.set_state(UasRinging())

    def answer(self, leg: UasLeg, sdp: bytes, headers: list[tuple[str, str]]) -> None:
        leg._ensure_dialog(confirmed=True)
        if leg.dialog is not None:
            leg.dialog.state = DialogState.CONFIRMED
        try:
            leg.respond(
                leg.invite,
                200,
                body=sdp,
                to_tag=leg.local_tag,
                headers=[("Contact", leg.sip.contact), *headers],
            )
        except TransactionError:
            return
        leg.answered_at = leg.sip.now()
        leg.final_status = 200
        leg.set_state(UasConnected())

    def reject(
        self, leg: UasLeg, status: int, reason: str | None, headers: list[tuple[str, str]]
    ) -> None:
        leg.final_status = status
        with contextlib.suppress(TransactionError):
            leg.respond(leg.invite, status, reason, to_tag=leg.local_tag, headers=headers)
        leg.set_state(UasDisconnected())

    def hangup(self, leg: UasLeg) -> None:
        self.reject(leg, 480, None, [])

    def on_cancel(self, leg: UasLeg) -> None:
        leg.final_status = 487
        with contextlib.suppress(TransactionError):
            leg.respond(leg.invite, 487, to_tag=leg.local_tag)
        leg.set_state(UasDisconnected())
        leg.emit(Disconnect(leg, by_remote=True, cancelled=True, reason="CANCEL"))

    def on_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.method == "BYE":
            # A BYE in the early dialog ends the call like a CANCEL would (RFC 3261 15).
            leg.answer_bye(transaction)
            assert isinstance(leg, UasLeg)
            self.on_cancel(leg)
            return
        leg.listener.relay_request(leg, transaction, request)


class UasRinging(UasTrying):
    """18x sent; the same moves as in Trying."""

    name = "uas-ringing"


class UasConnected(UasState):
    """200 sent (retransmitted by the transaction layer until the ACK arrives)."""

    name = "uas-connected"

    def on_ack(self, leg: UasLeg, ack: SipRequest) -> None:
        leg.ack_received = True

    def on_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.method == "BYE":
            leg.answer_bye(transaction)
            leg.set_state(UasDisconnected())
            leg.emit(Disconnect(leg, by_remote=True, reason="BYE"))
            return
        leg.listener.relay_request(leg, transaction, request)

    def hangup(self, leg: UasLeg) -> None:
        leg.send_bye()
        leg.set_state(UasDisconnected())

    def on_server_timeout(self, leg: UasLeg, transaction: ServerTransaction, reason: str) -> None:
        if transaction is leg.invite and not leg.ack_received:
            # Timer L: the caller never confirmed our 200 (RFC 3261 13.3.1.4: end the dialog).
            leg.send_bye()
            leg.set_state(UasDisconnected())
            leg.emit(Disconnect(leg, by_remote=False, reason="no ACK for 200"))


class UasDisconnected(UasState):
    name = "uas-disconnected"


# -- legs the call places (UAC role) ----------------------------------------------------------


class UacLeg(Leg):
    """An outgoing INVITE and the dialog it creates."""

    state: UacState

    def __init__(
        self,
        *,
        label: str,
        sip: SipPort,
        listener: LegListener,
        destination: Destination,
        request: SipRequest,
        target: str = "",
    ) -> None:
        super().__init__(label=label, sip=sip, listener=listener, destination=destination)
        self.request = request
        self.sip_call_id = request.call_id
        self.target = target
        self.invite: ClientTransaction | None = None
        self.ack: SipRequest | None = None
        self.state = UacCalling()

    def start(self) -> None:
        self.invite = self.sip.send_request(self.request, self.destination, self)
        if self.invite is None:
            self.set_state(UacDisconnected())
            self.emit(Fail(self, 503, "transport error"))
            return
        self.emit(Try(self))

    def cancel(self) -> None:
        self.state.cancel(self)

    def hangup(self) -> None:
        self.state.hangup(self)

    def on_stray_2xx(self, response: SipResponse) -> None:
        """A 2xx retransmission after the INVITE transaction is gone: ACK it again."""
        if self.ack is not None:
            self.sip.send_stateless(self.ack, self.destination)

    def _acknowledge(self, response: SipResponse) -> None:
        if self.dialog is None or self.dialog.remote_tag != (response.to.tag or ""):
            try:
                self.dialog = Dialog.from_uac_response(
                    self.request, response, local_contact=self.sip.contact
                )
            except (DialogError, SipParseError):
                self.dialog = None
        if self.dialog is None:
            return
        self.dialog.receive_response(self.request, response)
        self.ack = self.dialog.create_ack(via=self.via(), cseq=self.request.cseq.seq)
        self.sip.send_stateless(self.ack, self.destination)


class UacState(LegState):
    def cancel(self, leg: UacLeg) -> None:
        return

    def hangup(self, leg: UacLeg) -> None:
        return


class UacCalling(UacState):
    """INVITE sent, nothing but 100 back yet."""

    name = "uac-calling"

    def on_response(self, leg: Leg, transaction: ClientTransaction, response: SipResponse) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is not leg.invite:
            return
        code = response.status_code
        if code < 200:
            if code == 100:
                return
            if response.to.tag and leg.dialog is None:
                try:
                    leg.dialog = Dialog.from_uac_response(
                        leg.request, response, local_contact=leg.sip.contact
                    )
                except (DialogError, SipParseError):
                    leg.dialog = None  # a 1xx without Contact: wait for the 2xx
            if leg.first_ring is None:
                leg.first_ring = leg.sip.now()
            if not isinstance(leg.state, UacRinging):
                leg.set_state(UacRinging())
            leg.emit(Ring(leg, code, response.body))
            return
        leg.final_status = code
        if code < 300:
            leg._acknowledge(response)
            leg.answered_at = leg.sip.now()
            leg.set_state(UacConnected())
            leg.emit(Connect(leg, response.body))
            return
        # 3xx-6xx: the transaction layer ACKs it.
        leg.set_state(UacDisconnected())
        leg.emit(Fail(leg, code, response.reason))

    def on_timeout(self, leg: Leg, transaction: ClientTransaction, reason: str) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is not leg.invite:
            return
        leg.final_status = 408
        leg.set_state(UacDisconnected())
        leg.emit(Fail(leg, 408, reason))

    def cancel(self, leg: UacLeg) -> None:
        if leg.invite is not None:
            leg.sip.send_request(build_cancel(leg.request), leg.destination, leg)
        leg.set_state(UacCancelling())

    def hangup(self, leg: UacLeg) -> None:
        self.cancel(leg)

    def on_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.method == "BYE":
            leg.answer_bye(transaction)
            return
        leg.listener.relay_request(leg, transaction, request)


class UacRinging(UacCalling):
    """18x received (an early dialog exists when it had a To tag and Contact)."""

    name = "uac-ringing"


class UacCancelling(UacState):
    """CANCEL sent; waiting for the 487 (or a 2xx that crossed it, which gets ACK and BYE)."""

    name = "uac-cancelling"

    def on_response(self, leg: Leg, transaction: ClientTransaction, response: SipResponse) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is not leg.invite or response.status_code < 200:
            return
        leg.final_status = leg.final_status or response.status_code
        if response.status_code < 300:
            leg._acknowledge(response)
            leg.send_bye()
        leg.set_state(UacDisconnected())

    def on_timeout(self, leg: Leg, transaction: ClientTransaction, reason: str) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is leg.invite:
            leg.set_state(UacDisconnected())


class UacConnected(UacState):
    """2xx received and ACKed."""

    name = "uac-connected"

    def on_response(self, leg: Leg, transaction: ClientTransaction, response: SipResponse) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is leg.invite and 200 <= response.status_code < 300:
            # A retransmitted 2xx means our ACK was lost: the same ACK again (RFC 3261 13.2.2.4).
            leg.on_stray_2xx(response)

    def on_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        if request.method == "BYE":
            leg.answer_bye(transaction)
            leg.set_state(UacDisconnected())
            leg.emit(Disconnect(leg, by_remote=True, reason="BYE"))
            return
        leg.listener.relay_request(leg, transaction, request)

    def hangup(self, leg: UacLeg) -> None:
        leg.send_bye()
        leg.set_state(UacDisconnected())

    def cancel(self, leg: UacLeg) -> None:
        self.hangup(leg)


class UacDisconnected(UacState):
    name = "uac-disconnected"

    def on_response(self, leg: Leg, transaction: ClientTransaction, response: SipResponse) -> None:
        assert isinstance(leg, UacLeg)
        if transaction is leg.invite and 200 <= response.status_code < 300:
            leg.on_stray_2xx(response)
