"""The call controller: one per call, joining the caller's leg to the legs routing asks for.

The controller asks `Routing.Plan`, runs the returned verbs in order through the verb
registry (``verbs``), sends `Routing.Continue` with a verb's result and runs what comes back,
until routing has nothing more to do or the caller is gone. It learns what happens on its legs
through their typed events (``legs``): the caller's Disconnect ends the call (the running verb
is cancelled, every other leg is cancelled or hung up); events of dialled legs go to the verb
that placed them (the dial verb). In-dialog requests (re-INVITE, UPDATE, INFO) are passed to the
bridged peer. Every leg's lifecycle is recorded as call events.

If routing does not answer within its deadline the caller gets ``503`` with Retry-After (or a
BYE after an answer): never silence.

Media anchoring: with a `MediaControl` channel (``services.media``), the caller's offer is
answered by an endpoint of its own (leg ``a``), every dialled leg is offered another endpoint,
the callee's answer goes to that endpoint and the two are bridged when the call connects;
re-INVITEs and UPDATEs are answered by the leg's own endpoint. Without one (tests of the
signalling alone) the SDP passes between the legs unchanged (TEMPORARY until every deployment
runs media) and the `play` verb fails with ``media-unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import grpc
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_core.logging import EventLogger

from ..sip.message import SipRequest, SipResponse
from ..sip.transaction import Destination, ServerTransaction
from .events import CallEventLog, seconds
from .legs import (
    Connect,
    Disconnect,
    Fail,
    Leg,
    LegEvent,
    Ring,
    SipPort,
    Try,
    UacLeg,
    UasConnected,
    UasLeg,
)
from .media import MediaAnchor, MediaUnavailable

RETRY_AFTER_SECONDS = 5
HangupCause = common_pb2.HangupCause
CallOutcome = calls_pb2.CallOutcome
HangupSide = calls_pb2.HangupSide
DialStatus = routing_pb2.DialStatus


class RoutingUnavailable(Exception):
    """Routing did not answer in time (or failed): the caller gets 503."""


class RoutingClient:
    """`Routing.Plan` / `Routing.Continue` with a deadline on every call."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout: float) -> None:
        self._stub = routing_pb2_grpc.RoutingStub(channel)
        self._timeout = timeout

    async def plan(self, call: routing_pb2.CallContext) -> routing_pb2.PlanReply:
        try:
            reply: routing_pb2.PlanReply = await self._stub.Plan(
                routing_pb2.PlanRequest(call=call), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise RoutingUnavailable(f"Plan: {exc.code().name}") from exc
        return reply

    async def continue_(
        self, call: routing_pb2.CallContext, state: bytes, result: routing_pb2.VerbResult
    ) -> routing_pb2.PlanReply:
        try:
            reply: routing_pb2.PlanReply = await self._stub.Continue(
                routing_pb2.ContinueRequest(call=call, state=state, result=result),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise RoutingUnavailable(f"Continue: {exc.code().name}") from exc
        return reply


# -- SIP status <-> call outcome --------------------------------------------------------------


def dial_status_for(code: int) -> DialStatus.ValueType:
    if code in (486, 600):
        return DialStatus.DIAL_STATUS_BUSY
    if code in (603, 403, 607):
        return DialStatus.DIAL_STATUS_REJECTED
    if code in (404, 604, 484, 410):
        return DialStatus.DIAL_STATUS_NOT_FOUND
    if code in (480,):
        return DialStatus.DIAL_STATUS_UNAVAILABLE
    if code in (408, 487):
        return DialStatus.DIAL_STATUS_NO_ANSWER
    if code == 503:
        return DialStatus.DIAL_STATUS_CONGESTION
    return DialStatus.DIAL_STATUS_FAILED


def cause_for(code: int) -> HangupCause.ValueType:
    return {
        486: HangupCause.HANGUP_CAUSE_USER_BUSY,
        600: HangupCause.HANGUP_CAUSE_USER_BUSY,
        603: HangupCause.HANGUP_CAUSE_CALL_REJECTED,
        403: HangupCause.HANGUP_CAUSE_CALL_REJECTED,
        404: HangupCause.HANGUP_CAUSE_UNALLOCATED_NUMBER,
        604: HangupCause.HANGUP_CAUSE_UNALLOCATED_NUMBER,
        484: HangupCause.HANGUP_CAUSE_INVALID_NUMBER_FORMAT,
        480: HangupCause.HANGUP_CAUSE_USER_UNAVAILABLE,
        408: HangupCause.HANGUP_CAUSE_NO_ANSWER,
        487: HangupCause.HANGUP_CAUSE_ORIGINATOR_CANCEL,
        503: HangupCause.HANGUP_CAUSE_CONGESTION,
    }.get(code, HangupCause.HANGUP_CAUSE_OTHER_FAILURE)


def outcome_for(code: int) -> CallOutcome.ValueType:
    if code in (486, 600):
        return CallOutcome.CALL_OUTCOME_BUSY
    if code in (603, 403, 607):
        return CallOutcome.CALL_OUTCOME_REJECTED
    if code in (408, 480):
        return CallOutcome.CALL_OUTCOME_NO_ANSWER
    if code == 487:
        return CallOutcome.CALL_OUTCOME_CANCELLED
    return CallOutcome.CALL_OUTCOME_FAILED


def status_for_caller(codes: list[int]) -> int:
    """The final status the caller gets after every dialled leg failed (RFC 3261 16.7 spirit).

    A 6xx wins; then busy; then any other definite answer (404, 480, 603...); legs that only
    timed out or were cancelled by us mean nobody answered: 480.
    """
    if not codes:
        return 480
    for code in codes:
        if 600 <= code < 700:
            return code
    if 486 in codes:
        return 486
    definite = sorted(code for code in codes if code not in (408, 487) and code < 500)
    if definite:
        return definite[0]
    if all(code in (408, 487) for code in codes):
        return 480
    return 503 if any(code >= 500 for code in codes) else 480


# -- what a session needs from the edge -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contact:
    """Where a dialled leg goes: its Request-URI and the flow to send it on."""

    uri: str
    destination: Destination
    user_id: str = ""
    extension: str = ""


class CallServices(Protocol):
    """The edge-wide services a call uses (implemented by the call manager)."""

    routing: RoutingClient
    log: EventLogger
    media: MediaAnchor | None

    @property
    def sip(self) -> SipPort: ...

    def domain_for_tenant(self, tenant_id: str) -> str: ...

    async def extension_contacts(self, tenant_id: str, extension: str) -> list[Contact]: ...

    async def trunk_contact(self, tenant_id: str, trunk_id: str, dialed: str) -> Contact | None: ...

    def new_outgoing_invite(
        self,
        session: CallSession,
        contact: Contact,
        *,
        to_uri: str,
        body: bytes,
        caller_id: routing_pb2.CallerIdRule,
        extra_headers: list[tuple[str, str]],
    ) -> SipRequest: ...

    def register_leg(self, leg: Leg) -> None: ...

    def session_ended(self, session: CallSession) -> None: ...


@dataclass(slots=True)
class LegRecord:
    """Bookkeeping of one leg's events."""

    leg: Leg
    attempt: calls_pb2.CallAttempt
    rang: bool = False
    answered: bool = False
    ended: bool = False


class CallSession:
    """The controller of one call; see the module docstring."""

    def __init__(
        self,
        *,
        services: CallServices,
        context: routing_pb2.CallContext,
        transaction: ServerTransaction,
        local_tag: str,
        events: CallEventLog,
        from_user: str,
        from_name: str,
        caller_domain: str,
        verbs: VerbRegistry,
    ) -> None:
        self.services = services
        self.context = context
        self.events = events
        self.log = services.log.child("call")
        self.from_user = from_user
        self.from_name = from_name
        self.caller_domain = caller_domain
        self.verbs = verbs
        self.a = UasLeg(
            sip=services.sip, listener=self, transaction=transaction, local_tag=local_tag
        )
        self.b_legs: list[UacLeg] = []
        self.bridged: UacLeg | None = None
        self.state = b""
        self.failure_codes: list[int] = []
        self.b_events: asyncio.Queue[LegEvent] = asyncio.Queue()
        self.done = asyncio.Event()
        # Media endpoints by leg label, and the SDP each endpoint gave its leg.
        self.endpoints: dict[str, str] = {}
        self.local_sdp: dict[str, bytes] = {}
        self._release: asyncio.Task[None] | None = None
        # RFC 4028 session timer of the caller's dialog (the caller refreshes).
        self.session_interval: int | None = None
        self._session_timer: asyncio.TimerHandle | None = None
        self._offers: set[asyncio.Task[None]] = set()
        self._records: dict[Leg, LegRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._current: CallVerb | None = None
        self._hangup_side: HangupSide.ValueType = HangupSide.HANGUP_SIDE_PLATFORM
        self._a_cause: HangupCause.ValueType = HangupCause.HANGUP_CAUSE_NORMAL_CLEARING
        services.register_leg(self.a)
        self._record_attempt(
            self.a,
            calls_pb2.CallAttempt(
                direction=context.direction,
                caller_number=context.caller_number,
                caller_name=context.caller_name,
                callee_number=context.callee_number,
                did=context.did,
                caller_user_id=context.caller_user_id,
                trunk_id=context.trunk_id,
            ),
        )

    @property
    def call_id(self) -> str:
        return self.context.call_id

    @property
    def media_anchored(self) -> bool:
        return "a" in self.endpoints

    def caller_sdp(self) -> bytes:
        """What the caller gets as our answer: the endpoint's, or (no media) its own offer."""
        return self.local_sdp.get("a", self.a.sdp_offer)

    @property
    def answered(self) -> bool:
        return self.a.answered_at is not None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"call-{self.call_id}")

    async def _run(self) -> None:
        try:
            await self._execute()
        except asyncio.CancelledError:
            pass
        except (RoutingUnavailable, MediaUnavailable) as exc:
            self.log.warning("service_unavailable", call_id=self.call_id, error=str(exc))
            self.end(
                503,
                headers=[("Retry-After", str(RETRY_AFTER_SECONDS))],
                cause=HangupCause.HANGUP_CAUSE_SERVICE_UNAVAILABLE,
            )
        except Exception:
            self.log.exception("call_failed", call_id=self.call_id)
            self.end(
                500,
                headers=[("Retry-After", str(RETRY_AFTER_SECONDS))],
                cause=HangupCause.HANGUP_CAUSE_OTHER_FAILURE,
            )
        finally:
            if not self.done.is_set():
                self.end(status_for_caller(self.failure_codes))

    async def _execute(self) -> None:
        media = self.services.media
        if media is not None and self.a.sdp_offer:
            endpoint, answer = await media.create(
                call_id=self.call_id,
                leg="a",
                tenant_id=self.context.tenant_id,
                remote_offer=self.a.sdp_offer,
            )
            self.endpoints["a"], self.local_sdp["a"] = endpoint, answer
        reply = await self.services.routing.plan(self.context)
        while not self.a.ended:
            self.state = reply.state
            result = await self._run_verbs(reply.verbs)
            if self.a.ended or self.done.is_set():
                return
            if result is None:
                result = routing_pb2.VerbResult(completed=routing_pb2.Completed())
            self.context.answered = self.answered
            reply = await self.services.routing.continue_(self.context, self.state, result)
            if not reply.verbs:
                # Routing has nothing more to do: hang up normally.
                self.end(status_for_caller(self.failure_codes))
                return

    async def _run_verbs(self, verbs: Iterable[routing_pb2.Verb]) -> routing_pb2.VerbResult | None:
        loop = asyncio.get_running_loop()
        for verb in verbs:
            kind = verb.WhichOneof("kind") or ""
            verb_class = self.verbs.get(kind)
            if verb_class is None:
                return failed(verb.id, f"unsupported-verb:{kind}")
            problem = verb_class.precondition_problem(self)
            if problem is not None:
                return failed(verb.id, problem)
            if verb_class.needs_answer and not self.answered:
                self.answer_caller(self.caller_sdp())
            runner = verb_class(self, verb)
            self._current = runner
            began = loop.time()
            try:
                result = await runner.run()
            finally:
                self._current = None
            if self.a.ended or self.done.is_set():
                return None
            if result is not None:
                result.verb_id = verb.id
                result.elapsed.CopyFrom(seconds(loop.time() - began))
                return result
        return None

    def end(
        self,
        status: int = 480,
        *,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        cause: HangupCause.ValueType | None = None,
    ) -> None:
        """End the call from the platform's side: reject or BYE the caller, drop every b-leg."""
        if self.done.is_set():
            return
        for leg in self.b_legs:
            if not leg.ended:
                answered = leg.answered_at is not None
                leg.cancel()  # CANCEL while ringing, BYE once answered
                self._record_end(
                    leg,
                    0 if answered else 487,
                    CallOutcome.CALL_OUTCOME_ANSWERED
                    if answered
                    else CallOutcome.CALL_OUTCOME_CANCELLED,
                    HangupSide.HANGUP_SIDE_PLATFORM,
                )
        if not self.a.ended:
            if self.answered:
                self.a.hangup()
                self._a_cause = cause or HangupCause.HANGUP_CAUSE_NORMAL_CLEARING
            else:
                self.a.reject(status, reason, headers)
                self._a_cause = cause if cause is not None else cause_for(status)
        self._finish()

    def _finish(self) -> None:
        if self.done.is_set():
            return
        if self._session_timer is not None:
            self._session_timer.cancel()
        a = self.a
        if self.answered:
            outcome: CallOutcome.ValueType = CallOutcome.CALL_OUTCOME_ANSWERED
        elif a.final_status == 487:
            outcome = CallOutcome.CALL_OUTCOME_CANCELLED
        else:
            outcome = outcome_for(a.final_status)
        self._record_end(a, a.final_status, outcome, self._hangup_side, cause=self._a_cause)
        self.done.set()
        if self.endpoints and self.services.media is not None:
            self._release = asyncio.ensure_future(self._release_media(self.services.media))
        if self._current is not None:
            self._current.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
        self.services.session_ended(self)
        self.log.info(
            "call_ended",
            call_id=self.call_id,
            outcome=calls_pb2.CallOutcome.Name(outcome),
            sip_status=a.final_status,
            legs=len(self.b_legs) + 1,
        )

    # -- session timers (RFC 4028), the caller being the refresher ---------------------------

    def _session_timer_headers(self) -> list[tuple[str, str]]:
        """Session-Expires for our 200 when the caller asked for a session timer."""
        request = self.a.request
        value = request.get("session-expires")
        if not value or "timer" not in request.tokens("supported"):
            return []
        try:
            interval = int(value.split(";")[0].strip())
        except ValueError:
            return []
        if interval <= 0:
            return []
        # Accepted as asked (no 422 for short intervals: the caller chose them).
        self.session_interval = interval
        return [("Session-Expires", f"{interval};refresher=uac"), ("Require", "timer")]

    def _arm_session_timer(self) -> None:
        if self.session_interval is None or self.done.is_set():
            return
        if self._session_timer is not None:
            self._session_timer.cancel()
        self._session_timer = asyncio.get_running_loop().call_later(
            self.session_interval, self._session_expired
        )

    def _session_expired(self) -> None:
        # No refresh within the interval: the caller is gone (RFC 4028 10: send BYE).
        self.log.info("session_timer_expired", call_id=self.call_id)
        self.end(cause=HangupCause.HANGUP_CAUSE_OTHER_FAILURE)

    def _refresh_headers(self, leg: Leg) -> list[tuple[str, str]]:
        if leg is not self.a or self.session_interval is None:
            return []
        self._arm_session_timer()
        return [("Session-Expires", f"{self.session_interval};refresher=uac")]

    async def _release_media(self, media: MediaAnchor) -> None:
        for endpoint in list(self.endpoints.values()):
            await media.destroy(endpoint)

    # -- commands the verbs use ------------------------------------------------------------

    def ring_caller(self, status: int, sdp: bytes = b"") -> None:
        if self.a.ended or self.answered:
            return
        record = self._records[self.a]
        if record.rang and not sdp and status == 180:
            return  # the caller already hears ringback; more forks ringing change nothing
        self.a.ring(status, sdp)
        if not record.rang:
            record.rang = True
            self.events.ringing(
                "a",
                self.a.sip_call_id,
                post_dial_delay=self.services.sip.now() - self.a.started,
                early_media=bool(sdp),
            )

    def answer_caller(self, sdp: bytes, bridged_with: str = "") -> None:
        if self.a.ended or self.answered:
            return
        self.a.answer(sdp, self._session_timer_headers())
        if isinstance(self.a.state, UasConnected):
            self._arm_session_timer()
            record = self._records[self.a]
            record.answered = True
            self.events.answered(
                "a",
                self.a.sip_call_id,
                ring_duration=self.services.sip.now() - self.a.started,
                bridged_with=bridged_with,
            )

    async def place_leg(
        self,
        contact: Contact,
        *,
        to_uri: str,
        callee_number: str,
        caller_id: routing_pb2.CallerIdRule,
        headers: list[tuple[str, str]],
        step_id: str,
        trunk_id: str = "",
    ) -> UacLeg:
        label = f"b{len(self.b_legs) + 1}"
        media = self.services.media
        if media is not None and self.media_anchored:
            endpoint, offer = await media.create(
                call_id=self.call_id, leg=label, tenant_id=self.context.tenant_id, remote_offer=None
            )
            self.endpoints[label], self.local_sdp[label] = endpoint, offer
        else:
            # TEMPORARY (no MediaControl): the caller's offer goes to the callee unchanged.
            offer = self.a.sdp_offer
        request = self.services.new_outgoing_invite(
            self,
            contact,
            to_uri=to_uri,
            body=offer,
            caller_id=caller_id,
            extra_headers=headers,
        )
        leg = UacLeg(
            label=label,
            sip=self.services.sip,
            listener=self,
            destination=contact.destination,
            request=request,
            target=contact.uri,
        )
        self.b_legs.append(leg)
        self.services.register_leg(leg)
        self._records[leg] = LegRecord(
            leg,
            calls_pb2.CallAttempt(
                direction=self.context.direction,
                caller_number=self.context.caller_number,
                caller_name=self.context.caller_name,
                callee_number=callee_number,
                caller_user_id=self.context.caller_user_id,
                callee_user_id=contact.user_id,
                callee_extension=contact.extension,
                trunk_id=trunk_id,
                parent_leg="a",
                step_id=step_id,
            ),
        )
        self.log.info(
            "leg_placed",
            call_id=self.call_id,
            leg=leg.label,
            target=contact.uri,
            destination=f"{contact.destination.transport}:{contact.destination.host}:"
            f"{contact.destination.port}",
        )
        leg.start()
        return leg

    async def bridge(self, leg: UacLeg, sdp: bytes) -> None:
        """``leg`` answered: it becomes the caller's peer; the caller gets its answer."""
        self.bridged = leg
        media = self.services.media
        endpoint = self.endpoints.get(leg.label)
        if media is not None and endpoint is not None:
            await media.remote_answer(endpoint, sdp)
            await media.bridge(self.endpoints["a"], endpoint)
            sdp = self.caller_sdp()
        if not self.answered:
            self.answer_caller(sdp, bridged_with=leg.label)

    # -- leg events --------------------------------------------------------------------------

    def _record_attempt(self, leg: Leg, attempt: calls_pb2.CallAttempt) -> None:
        self._records[leg] = LegRecord(leg, attempt)
        self.events.attempt(leg.label, leg.sip_call_id, attempt)

    def _record_end(
        self,
        leg: Leg,
        status: int,
        outcome: CallOutcome.ValueType,
        side: HangupSide.ValueType,
        *,
        cause: HangupCause.ValueType | None = None,
    ) -> None:
        record = self._records.get(leg)
        if record is None or record.ended:
            return
        record.ended = True
        if cause is None:
            cause = (
                HangupCause.HANGUP_CAUSE_NORMAL_CLEARING
                if outcome == CallOutcome.CALL_OUTCOME_ANSWERED
                else cause_for(status)
            )
        self.events.ended(
            leg.label,
            leg.sip_call_id,
            outcome=outcome,
            cause=cause,
            side=side,
            sip_status=status if status >= 300 else 0,
            started=leg.started,
            answered=leg.answered_at,
            first_ring=leg.first_ring,
            now=self.services.sip.now(),
        )

    def leg_event(self, event: LegEvent) -> None:
        leg = event.leg
        if leg is self.a:
            if isinstance(event, Disconnect):
                self._caller_gone(event)
            return
        record = self._records.get(leg)
        if record is None:
            return
        now = self.services.sip.now()
        if isinstance(event, Try):
            self.events.attempt(leg.label, leg.sip_call_id, record.attempt)
        elif isinstance(event, Ring) and not record.rang:
            record.rang = True
            self.events.ringing(
                leg.label,
                leg.sip_call_id,
                post_dial_delay=now - leg.started,
                early_media=bool(event.sdp),
            )
        elif isinstance(event, Connect):
            record.answered = True
            self.events.answered(
                leg.label,
                leg.sip_call_id,
                ring_duration=now - leg.started,
                bridged_with="a",
                user_id=record.attempt.callee_user_id,
                extension=record.attempt.callee_extension,
            )
        elif isinstance(event, Fail):
            self.failure_codes.append(event.status)
            self._record_end(
                leg, event.status, outcome_for(event.status), HangupSide.HANGUP_SIDE_CALLEE
            )
        elif isinstance(event, Disconnect):
            self._record_end(
                leg,
                0,
                CallOutcome.CALL_OUTCOME_ANSWERED,
                HangupSide.HANGUP_SIDE_CALLEE
                if event.by_remote
                else HangupSide.HANGUP_SIDE_PLATFORM,
            )
        if not self.done.is_set():
            self.b_events.put_nowait(event)

    def _caller_gone(self, event: Disconnect) -> None:
        self._hangup_side = (
            HangupSide.HANGUP_SIDE_CALLER if event.by_remote else HangupSide.HANGUP_SIDE_PLATFORM
        )
        if event.cancelled:
            self._a_cause = HangupCause.HANGUP_CAUSE_ORIGINATOR_CANCEL
        elif not event.by_remote:
            self._a_cause = HangupCause.HANGUP_CAUSE_PROTOCOL_ERROR
        for leg in self.b_legs:
            if leg.ended:
                continue
            answered = leg.answered_at is not None
            leg.cancel()  # CANCEL while ringing, BYE once answered
            self._record_end(
                leg,
                0 if answered else 487,
                CallOutcome.CALL_OUTCOME_ANSWERED
                if answered
                else CallOutcome.CALL_OUTCOME_CANCELLED,
                HangupSide.HANGUP_SIDE_CALLER,
            )
        self._finish()

    def cancel_leg(self, leg: UacLeg, outcome: CallOutcome.ValueType) -> None:
        """Stop ringing ``leg`` (another leg answered, or the dial timed out)."""
        if leg.ended:
            return
        leg.cancel()
        self._record_end(leg, 487, outcome, HangupSide.HANGUP_SIDE_PLATFORM)

    def relay_request(self, leg: Leg, transaction: ServerTransaction, request: SipRequest) -> None:
        """re-INVITE (hold/unhold, codec change), UPDATE, INFO: through to the peer leg."""
        peer: Leg | None = (
            self.bridged if leg is self.a else (self.a if leg is self.bridged else None)
        )
        if peer is None or peer.ended or peer.dialog is None:
            if request.method == "INFO":
                leg.respond(transaction, 200)
            else:
                leg.respond(transaction, 491 if request.method == "INVITE" else 481)
            return
        method = request.method
        media = self.services.media
        endpoint = self.endpoints.get(leg.label)
        if media is not None and endpoint is not None and method in ("INVITE", "UPDATE"):
            # Anchored: the leg's own endpoint answers (hold, unhold, codec change); the peer
            # keeps its media as it is.
            task = asyncio.ensure_future(self._answer_offer(media, endpoint, leg, transaction))
            self._offers.add(task)
            task.add_done_callback(self._offers.discard)
            return

        def answer(response: SipResponse) -> None:
            if response.status_code < 200:
                return
            if method == "INVITE" and response.status_code < 300 and peer.dialog is not None:
                ack = peer.dialog.create_ack(via=peer.via(), cseq=response.cseq.seq)
                self.services.sip.send_stateless(ack, peer.destination)
            headers: list[tuple[str, str]] = []
            if method in ("INVITE", "UPDATE") and response.status_code < 300:
                headers.append(("Contact", self.services.sip.contact))
                headers += self._refresh_headers(leg)
            with contextlib.suppress(Exception):
                leg.respond(
                    transaction,
                    response.status_code,
                    response.reason,
                    body=response.body,
                    content_type=response.content_type,
                    headers=headers,
                )

        sent = peer.send_in_dialog(
            method,
            body=request.body,
            content_type=request.content_type,
            on_response=answer,
        )
        if not sent:
            leg.respond(transaction, 500, "Server Internal Error - peer dialog unavailable")

    async def _answer_offer(
        self, media: MediaAnchor, endpoint: str, leg: Leg, transaction: ServerTransaction
    ) -> None:
        offer = transaction.request.body
        try:
            local = await media.remote_offer(endpoint, offer) if offer else b""
        except MediaUnavailable as exc:
            self.log.warning("media_update_failed", call_id=self.call_id, error=str(exc))
            leg.respond(transaction, 500, None, headers=[("Retry-After", "5")])
            return
        local = local or self.local_sdp.get(leg.label, b"")
        self.local_sdp[leg.label] = local
        with contextlib.suppress(Exception):
            leg.respond(
                transaction,
                200,
                body=local,
                headers=[("Contact", self.services.sip.contact), *self._refresh_headers(leg)],
            )


def failed(verb_id: str, reason: str) -> routing_pb2.VerbResult:
    return routing_pb2.VerbResult(verb_id=verb_id, failed=routing_pb2.VerbFailed(reason=reason))


# Imported at the end: the verbs use CallSession's methods, the session runs the verbs.
from .verbs import CallVerb, VerbRegistry  # noqa: E402
