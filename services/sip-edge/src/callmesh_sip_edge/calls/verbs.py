"""Routing's verbs as small classes found through a registry (ARCHITECTURE §4).

Each verb class declares its preconditions (``needs_answer``: the call is answered first;
``needs_media``: it cannot run without a media endpoint) and implements ``run`` (returns a
`VerbResult` when the verb produces one, which ends the verb list and goes to
`Routing.Continue`) and ``cancel`` (the caller hung up or the call is ending). New verbs are
new classes in :func:`default_verbs`; the session never switches on the verb kind.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.media.v1 import media_pb2 as media_pb
from callmesh.routing.v1 import routing_pb2

from .events import seconds
from .legs import Connect, Disconnect, Fail, Ring, UacLeg

if TYPE_CHECKING:
    from .session import CallSession, Contact

DialStatus = routing_pb2.DialStatus
DEFAULT_DIAL_TIMEOUT = 60.0


class CallVerb:
    """One verb of a plan; see the module docstring."""

    kind: ClassVar[str] = ""
    needs_answer: ClassVar[bool] = False
    needs_media: ClassVar[bool] = False

    def __init__(self, session: CallSession, verb: routing_pb2.Verb) -> None:
        self.session = session
        self.verb = verb

    @classmethod
    def precondition_problem(cls, session: CallSession) -> str | None:
        """Why the verb cannot run on this call, or None. (Answering first is done in run.)"""
        if cls.needs_media and not session.media_anchored:
            return "media-unavailable"
        return None

    async def run(self) -> routing_pb2.VerbResult | None:
        raise NotImplementedError

    def cancel(self) -> None:
        """The call is ending; stop whatever the verb started. Default: nothing to stop."""


class VerbRegistry:
    """Verb classes by the name of their field in `Verb.kind`."""

    def __init__(self, verbs: list[type[CallVerb]]) -> None:
        self._verbs = {verb.kind: verb for verb in verbs}

    def get(self, kind: str) -> type[CallVerb] | None:
        return self._verbs.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._verbs)


class AnswerVerb(CallVerb):
    kind = "answer"

    async def run(self) -> routing_pb2.VerbResult | None:
        session = self.session
        if self.verb.answer.early_media_only:
            session.ring_caller(183, session.local_sdp.get("a", b""))
        else:
            # Without media (TEMPORARY) there is no answer of our own: the offer is echoed.
            session.answer_caller(session.caller_sdp())
        return None


class HangupVerb(CallVerb):
    kind = "hangup"

    async def run(self) -> routing_pb2.VerbResult | None:
        hangup = self.verb.hangup
        status = hangup.sip_status or _status_for_cause(hangup.cause)
        self.session.end(
            status,
            reason=hangup.reason_phrase or None,
            cause=hangup.cause or None,
        )
        return None


def _status_for_cause(cause: int) -> int:
    causes = common_pb2.HangupCause
    statuses: dict[int, int] = {
        causes.HANGUP_CAUSE_USER_BUSY: 486,
        causes.HANGUP_CAUSE_NO_ANSWER: 480,
        causes.HANGUP_CAUSE_CALL_REJECTED: 603,
        causes.HANGUP_CAUSE_UNALLOCATED_NUMBER: 404,
        causes.HANGUP_CAUSE_NO_ROUTE: 404,
        causes.HANGUP_CAUSE_CONGESTION: 503,
        causes.HANGUP_CAUSE_SERVICE_UNAVAILABLE: 503,
        causes.HANGUP_CAUSE_USER_UNAVAILABLE: 480,
        causes.HANGUP_CAUSE_BARRED: 403,
        causes.HANGUP_CAUSE_INVALID_NUMBER_FORMAT: 484,
    }
    return statuses.get(cause, 480)


class PlayVerb(CallVerb):
    """Prompts, tones and music through MediaControl.Play on the caller's endpoint."""

    kind = "play"
    needs_media = True

    async def run(self) -> routing_pb2.VerbResult | None:
        session = self.session
        media = session.services.media
        endpoint = session.endpoints.get("a")
        if media is None or endpoint is None:
            return failed_result("media-unavailable")
        if not session.answered:
            # Announcements before an answer go out as early media (183), as the verb allows.
            session.ring_caller(183, session.caller_sdp())
        done = await media.play(endpoint, self.verb.play)
        if done.end == media_pb.PLAY_END_ERROR:
            return failed_result(done.error or "play-failed")
        return None


class DialVerb(CallVerb):
    """Ring the targets (every registered contact of an extension, or a trunk) at once.

    The first 2xx wins and is bridged to the caller; every other leg gets CANCEL (or BYE if
    its 2xx crossed). Provisional responses become ringback for the caller (180, or 183 with
    the callee's early media). The result goes to routing when every leg failed, on the
    dial's timeout, or when the answered callee hangs up.
    """

    kind = "dial"

    def __init__(self, session: CallSession, verb: routing_pb2.Verb) -> None:
        super().__init__(session, verb)
        self.legs: dict[UacLeg, int] = {}
        self.outcomes: dict[int, routing_pb2.TargetOutcome] = {}

    async def _contacts(
        self, index: int, target: routing_pb2.DialTarget
    ) -> tuple[list[Contact], str, str, str]:
        """(contacts, To URI, number dialled, trunk id) of one target."""
        session = self.session
        services = session.services
        tenant_id = session.context.tenant_id
        kind = target.WhichOneof("kind")
        domain = services.domain_for_tenant(tenant_id)
        if kind == "extension":
            extension = target.extension.extension
            found = await services.extension_contacts(tenant_id, extension)
            return found, f"<sip:{extension}@{domain}>", extension, ""
        if kind == "trunk":
            trunk = target.trunk
            contact = await services.trunk_contact(tenant_id, trunk.trunk_id, trunk.dialed)
            if contact is None:
                return [], "", trunk.dialed, trunk.trunk_id
            return [contact], f"<{contact.uri}>", trunk.dialed, trunk.trunk_id
        if kind == "number":
            number = target.number
            for route in number.routes:
                dialed = route.dialed or number.e164
                contact = await services.trunk_contact(tenant_id, route.trunk_id, dialed)
                if contact is not None:
                    # Moving on to the next route on congestion is left to routing's Continue.
                    return [contact], f"<{contact.uri}>", dialed, route.trunk_id
            return [], "", number.e164, ""
        return [], "", "", ""

    async def run(self) -> routing_pb2.VerbResult | None:
        session = self.session
        dial = self.verb.dial
        loop = asyncio.get_running_loop()
        began = loop.time()
        timeout = dial.timeout.ToNanoseconds() / 1e9 if dial.HasField("timeout") else 0.0
        timeout = timeout or DEFAULT_DIAL_TIMEOUT
        for index, target in enumerate(dial.targets):
            contacts, to_uri, number, trunk_id = await self._contacts(index, target)
            if not contacts:
                self.outcomes[index] = routing_pb2.TargetOutcome(
                    index=index,
                    label=target.label,
                    status=DialStatus.DIAL_STATUS_UNAVAILABLE
                    if target.WhichOneof("kind") == "extension"
                    else DialStatus.DIAL_STATUS_FAILED,
                    trunk_id=trunk_id,
                )
                session.failure_codes.append(
                    480 if target.WhichOneof("kind") == "extension" else 503
                )
                continue
            for contact in contacts:
                if session.done.is_set():
                    return None
                leg = await session.place_leg(
                    contact,
                    to_uri=to_uri,
                    callee_number=number,
                    caller_id=dial.caller_id,
                    headers=[(h.name, h.value) for h in dial.headers],
                    step_id=self.verb.id,
                    trunk_id=trunk_id,
                )
                self.legs[leg] = index
        if not self.legs:
            return self._result(self._overall_status(), began)
        deadline = began + timeout
        winner: UacLeg | None = None
        while winner is None:
            live = [leg for leg in self.legs if not leg.ended]
            if not live and session.b_events.empty():
                return self._result(self._overall_status(), began)
            remaining = deadline - loop.time()
            if remaining <= 0:
                for leg in live:
                    session.cancel_leg(leg, calls_pb2.CallOutcome.CALL_OUTCOME_NO_ANSWER)
                    self._outcome(leg, DialStatus.DIAL_STATUS_NO_ANSWER, 487)
                session.failure_codes.append(408)
                return self._result(DialStatus.DIAL_STATUS_NO_ANSWER, began)
            try:
                event = await asyncio.wait_for(session.b_events.get(), remaining)
            except TimeoutError:
                continue
            if not isinstance(event.leg, UacLeg) or event.leg not in self.legs:
                continue
            leg = event.leg
            if isinstance(event, Ring):
                if event.sdp and not session.media_anchored:
                    # RINGBACK_MODE_PASS_EARLY_MEDIA by nature when media is not anchored;
                    # anchored calls get plain ringback (the callee's early media is not
                    # bridged before the answer yet).
                    session.ring_caller(183, event.sdp)
                else:
                    session.ring_caller(180)
            elif isinstance(event, Fail):
                self._outcome(leg, _dial_status(event.status), event.status)
            elif isinstance(event, Connect):
                winner = leg
                self._outcome(leg, DialStatus.DIAL_STATUS_ANSWERED, 200)
                for other in self.legs:
                    if other is not leg:
                        session.cancel_leg(other, calls_pb2.CallOutcome.CALL_OUTCOME_CANCELLED)
                await session.bridge(leg, event.sdp)
        ring_duration = loop.time() - began
        answered_at = loop.time()
        # Bridged: wait for the callee's side to end (the caller's side ends the whole call).
        while True:
            event = await session.b_events.get()
            if event.leg is winner and isinstance(event, Disconnect):
                break
        result = self._result(DialStatus.DIAL_STATUS_ANSWERED, began)
        result.dial.answered_index = self.legs[winner]
        result.dial.answered_leg = winner.label
        result.dial.ring_duration.CopyFrom(seconds(ring_duration))
        result.dial.talk_duration.CopyFrom(seconds(loop.time() - answered_at))
        return result

    def _outcome(self, leg: UacLeg, status: DialStatus.ValueType, sip_status: int) -> None:
        index = self.legs[leg]
        target = self.verb.dial.targets[index]
        previous = self.outcomes.get(index)
        # An extension with several contacts: the best of its legs counts.
        if previous is not None and previous.status == DialStatus.DIAL_STATUS_ANSWERED:
            return
        self.outcomes[index] = routing_pb2.TargetOutcome(
            index=index, label=target.label, status=status, sip_status=sip_status
        )

    def _overall_status(self) -> DialStatus.ValueType:
        from .session import status_for_caller

        return _dial_status(status_for_caller(self.session.failure_codes))

    def _result(self, status: DialStatus.ValueType, began: float) -> routing_pb2.VerbResult:
        loop = asyncio.get_running_loop()
        result = routing_pb2.VerbResult(
            dial=routing_pb2.DialResult(
                status=status,
                targets=[self.outcomes[i] for i in sorted(self.outcomes)],
            )
        )
        result.dial.ring_duration.CopyFrom(seconds(loop.time() - began))
        return result

    def cancel(self) -> None:
        for leg in self.legs:
            if not leg.ended:
                leg.cancel()


def _dial_status(code: int) -> DialStatus.ValueType:
    from .session import dial_status_for

    return dial_status_for(code)


def failed_result(reason: str) -> routing_pb2.VerbResult:
    return routing_pb2.VerbResult(failed=routing_pb2.VerbFailed(reason=reason))


def default_verbs() -> VerbRegistry:
    """The verbs this edge runs (issue 3: answer, dial, play, hangup)."""
    return VerbRegistry([AnswerVerb, DialVerb, PlayVerb, HangupVerb])
