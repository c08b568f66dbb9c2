"""Mapping between the Routing contract (protobuf) and the core's dataclasses.

Pure functions, no I/O: the servicer calls them around the engine. Every verb the engine can
produce has a mapping here, and every result the contract can carry maps to a result the
engine understands (results of verbs the engine never issues count as `Completed`).
"""

from __future__ import annotations

from callmesh.common.v1 import common_pb2
from callmesh.routing.v1 import routing_pb2 as pb
from google.protobuf.duration_pb2 import Duration

from callmesh_routing.core import verbs
from callmesh_routing.core.engine import CallContext, Origin

_STRATEGIES = {
    "all_at_once": pb.RING_STRATEGY_ALL_AT_ONCE,
    "uniform": pb.RING_STRATEGY_UNIFORM,
    "sequential": pb.RING_STRATEGY_SEQUENTIAL,
    "cascading": pb.RING_STRATEGY_CASCADING,
    # Follow-me rings its steps one after another (several targets per step at once); the
    # targets' start_after carries the exact schedule.
    "follow_me": pb.RING_STRATEGY_SEQUENTIAL,
}

_HANGUP_CAUSES = {
    200: common_pb2.HANGUP_CAUSE_NORMAL_CLEARING,
    403: common_pb2.HANGUP_CAUSE_BARRED,
    404: common_pb2.HANGUP_CAUSE_UNALLOCATED_NUMBER,
    480: common_pb2.HANGUP_CAUSE_NO_ANSWER,
    486: common_pb2.HANGUP_CAUSE_USER_BUSY,
    500: common_pb2.HANGUP_CAUSE_OTHER_FAILURE,
    503: common_pb2.HANGUP_CAUSE_NO_ROUTE,
    603: common_pb2.HANGUP_CAUSE_CALL_REJECTED,
}

_DIAL_OUTCOMES = {
    pb.DIAL_STATUS_ANSWERED: verbs.DialOutcome.ANSWERED,
    pb.DIAL_STATUS_NO_ANSWER: verbs.DialOutcome.NO_ANSWER,
    # Nobody reachable (not registered, DND) is handled like nobody answering: the
    # configured no-answer action runs.
    pb.DIAL_STATUS_UNAVAILABLE: verbs.DialOutcome.NO_ANSWER,
    pb.DIAL_STATUS_BUSY: verbs.DialOutcome.BUSY,
    pb.DIAL_STATUS_REJECTED: verbs.DialOutcome.BUSY,
}

_QUEUE_OVERFLOW_REASONS = {
    "max-length": verbs.QueueOutcome.FULL,
    "no-agents": verbs.QueueOutcome.CLOSED,
}


def call_context(call: pb.CallContext) -> CallContext:
    """The core's view of a call from the contract's."""
    from_user = call.direction in (
        common_pb2.CALL_DIRECTION_OUTBOUND,
        common_pb2.CALL_DIRECTION_INTERNAL,
    ) or (
        call.direction == common_pb2.CALL_DIRECTION_UNSPECIFIED
        and bool(call.caller_user_id or call.caller_extension)
    )
    if from_user:
        return CallContext(
            call.call_id,
            Origin.USER,
            call.caller_number or call.caller_extension,
            call.callee_number,
            call.caller_extension or call.caller_number or None,
        )
    return CallContext(
        call.call_id, Origin.TRUNK, call.caller_number, call.did or call.callee_number
    )


def verb_result(result: pb.VerbResult) -> verbs.VerbResult:
    """The core's view of what the last verb produced."""
    outcome = result.WhichOneof("outcome")
    if outcome == "gather":
        gather = result.gather
        digits = "" if gather.status == pb.GATHER_STATUS_NO_INPUT else gather.digits
        return verbs.GatherResult(digits)
    if outcome == "dial":
        dial = result.dial
        answered_by = None
        if dial.status == pb.DIAL_STATUS_ANSWERED:
            answered_by = next(
                (t.label for t in dial.targets if t.index == dial.answered_index and t.label),
                None,
            )
        return verbs.DialResult(
            _DIAL_OUTCOMES.get(dial.status, verbs.DialOutcome.FAILED), answered_by
        )
    if outcome == "queue":
        queue = result.queue
        if queue.outcome in (pb.QUEUE_OUTCOME_ANSWERED, pb.QUEUE_OUTCOME_CALLBACK_ACCEPTED):
            # Served, or a callback promised: either way the call may end now.
            return verbs.QueueResult(verbs.QueueOutcome.ANSWERED)
        if queue.outcome == pb.QUEUE_OUTCOME_UNAVAILABLE:
            return verbs.QueueResult(verbs.QueueOutcome.CLOSED)
        return verbs.QueueResult(
            _QUEUE_OVERFLOW_REASONS.get(queue.reason, verbs.QueueOutcome.TIMEOUT)
        )
    # Voicemail left, transfer done, a verb that failed, the list ran out: nothing the
    # engine branches on beyond "the verb is over".
    return verbs.Completed()


def _seconds(value: int) -> Duration:
    return Duration(seconds=value)


def _prompt(name: str) -> common_pb2.MediaSource:
    return common_pb2.MediaSource(prompt=name)


def _dial_target(leg: verbs.DialLeg) -> pb.DialTarget:
    target = pb.DialTarget(
        timeout=_seconds(max(leg.stop - leg.start, 0)),
        start_after=_seconds(leg.start),
        label=leg.target,
    )
    if leg.kind is verbs.TargetKind.NUMBER:
        target.number.e164 = leg.target
        target.number.routes.extend(pb.TrunkRoute(trunk_id=trunk) for trunk in leg.trunks)
    else:
        target.extension.extension = leg.target
    return target


def verb(item: verbs.Verb, verb_id: str) -> pb.Verb:
    """One contract verb from one core verb."""
    match item:
        case verbs.Answer():
            return pb.Verb(id=verb_id, answer=pb.AnswerVerb())
        case verbs.Play():
            return pb.Verb(
                id=verb_id,
                play=pb.PlayVerb(
                    items=[_prompt(item.prompt)], times=item.loop, stop_on_dtmf=item.barge_in
                ),
            )
        case verbs.Gather():
            # Retries belong to routing (the menu's own invalid/no-input prompts and limits),
            # so the edge makes one attempt and reports whatever it got.
            return pb.Verb(
                id=verb_id,
                gather=pb.GatherVerb(
                    prompts=[_prompt(item.prompt)],
                    min_digits=1,
                    max_digits=item.max_digits,
                    terminators=item.terminators,
                    first_digit_timeout=_seconds(item.timeout),
                    inter_digit_timeout=_seconds(item.inter_digit_timeout),
                    retries=0,
                ),
            )
        case verbs.Dial():
            dial = pb.DialVerb(
                targets=[_dial_target(leg) for leg in item.legs],
                strategy=_STRATEGIES.get(item.strategy, pb.RING_STRATEGY_ALL_AT_ONCE),
                timeout=_seconds(item.timeout),
            )
            if item.caller_id is not None:
                dial.caller_id.mode = pb.CALLER_ID_MODE_OVERRIDE
                dial.caller_id.number = item.caller_id
            return pb.Verb(id=verb_id, dial=dial)
        case verbs.Queue():
            return pb.Verb(
                id=verb_id, queue=pb.QueueVerb(queue_id=item.queue, priority=item.priority)
            )
        case verbs.Voicemail():
            voicemail = pb.VoicemailVerb(box=item.mailbox)
            if item.greeting:
                voicemail.greeting.prompt = item.greeting
            return pb.Verb(id=verb_id, voicemail=voicemail)
        case verbs.CallbackRequest():
            return pb.Verb(
                id=verb_id,
                callback_request=pb.CallbackRequestVerb(
                    queue_id=item.queue or "", number=item.number
                ),
            )
        case verbs.Hangup():
            return pb.Verb(
                id=verb_id,
                hangup=pb.HangupVerb(
                    cause=_HANGUP_CAUSES.get(
                        item.sip_status, common_pb2.HANGUP_CAUSE_OTHER_FAILURE
                    ),
                    # A final status only means something before answer, and only failures
                    # have one; 200 (a finished call) becomes a normal BYE or 0 = derived.
                    sip_status=item.sip_status if item.sip_status >= 300 else 0,
                ),
            )
