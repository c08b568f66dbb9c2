"""Mapping between the Routing contract and the core: every verb out, every result in."""

from __future__ import annotations

import pytest
from callmesh.common.v1 import common_pb2
from callmesh.routing.v1 import routing_pb2 as pb
from callmesh_routing import contract
from callmesh_routing.core import verbs
from callmesh_routing.core.engine import Origin


def test_every_core_verb_kind_has_a_contract_verb() -> None:
    samples: list[tuple[verbs.Verb, str]] = [
        (verbs.Answer(), "answer"),
        (verbs.Play("welcome", 2, True), "play"),
        (verbs.Gather("menu", 4, 6, 2, "#"), "gather"),
        (verbs.Dial((verbs.DialLeg("101", verbs.TargetKind.EXTENSION, 0, 20),), 20, "x"), "dial"),
        (verbs.Queue("support", 5), "queue"),
        (verbs.Voicemail("general", "vm-greeting"), "voicemail"),
        (verbs.CallbackRequest("+74951112233", "support"), "callback_request"),
        (verbs.Hangup("no answer", 480), "hangup"),
    ]
    # The union the engine returns, member by member: a new core verb must get a mapping.
    assert {type(v) for v, _ in samples} == set(verbs.Verb.__args__)  # type: ignore[attr-defined]
    for item, kind in samples:
        mapped = contract.verb(item, "main#0")
        assert (mapped.id, mapped.WhichOneof("kind")) == ("main#0", kind)


def test_play_gather_queue_voicemail_callback_fields() -> None:
    play = contract.verb(verbs.Play("welcome", 2, True), "v").play
    assert ([i.prompt for i in play.items], play.times, play.stop_on_dtmf) == (["welcome"], 2, True)
    gather = contract.verb(verbs.Gather("menu", 4, 6, 2, "#"), "v").gather
    assert [p.prompt for p in gather.prompts] == ["menu"]
    assert (gather.min_digits, gather.max_digits, gather.terminators, gather.retries) == (
        1,
        4,
        "#",
        0,
    )
    assert (gather.first_digit_timeout.seconds, gather.inter_digit_timeout.seconds) == (6, 2)
    queue = contract.verb(verbs.Queue("support", 5), "v").queue
    assert (queue.queue_id, queue.priority) == ("support", 5)
    voicemail = contract.verb(verbs.Voicemail("general", "vm-greeting"), "v").voicemail
    assert (voicemail.box, voicemail.greeting.prompt) == ("general", "vm-greeting")
    plain = contract.verb(verbs.Voicemail("101"), "v").voicemail
    assert not plain.HasField("greeting")
    callback = contract.verb(verbs.CallbackRequest("+74951112233"), "v").callback_request
    assert (callback.number, callback.queue_id) == ("+74951112233", "")


def test_dial_carries_the_ring_plan_and_trunk_order() -> None:
    dial = contract.verb(
        verbs.Dial(
            (
                verbs.DialLeg("103", verbs.TargetKind.EXTENSION, 0, 45),
                verbs.DialLeg("104", verbs.TargetKind.EXTENSION, 15, 45),
                verbs.DialLeg(
                    "+79161110104", verbs.TargetKind.NUMBER, 30, 45, ("mts", "rostelecom")
                ),
            ),
            45,
            "cascading",
            caller_id="+78123090000",
        ),
        "v",
    ).dial
    assert dial.strategy == pb.RING_STRATEGY_CASCADING
    assert dial.timeout.seconds == 45
    schedule = [(t.label, t.start_after.seconds, t.timeout.seconds) for t in dial.targets]
    assert schedule == [("103", 0, 45), ("104", 15, 30), ("+79161110104", 30, 15)]
    assert all(t.HasField("start_after") for t in dial.targets)
    assert dial.targets[0].extension.extension == "103"
    number = dial.targets[2].number
    assert (number.e164, [r.trunk_id for r in number.routes]) == (
        "+79161110104",
        ["mts", "rostelecom"],
    )
    assert (dial.caller_id.mode, dial.caller_id.number) == (
        pb.CALLER_ID_MODE_OVERRIDE,
        "+78123090000",
    )


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("all_at_once", pb.RING_STRATEGY_ALL_AT_ONCE),
        ("uniform", pb.RING_STRATEGY_UNIFORM),
        ("sequential", pb.RING_STRATEGY_SEQUENTIAL),
        ("cascading", pb.RING_STRATEGY_CASCADING),
        ("follow_me", pb.RING_STRATEGY_SEQUENTIAL),
        ("single", pb.RING_STRATEGY_ALL_AT_ONCE),
        ("outbound", pb.RING_STRATEGY_ALL_AT_ONCE),
    ],
)
def test_ring_strategies(strategy: str, expected: int) -> None:
    leg = verbs.DialLeg("101", verbs.TargetKind.EXTENSION, 0, 20)
    assert contract.verb(verbs.Dial((leg,), 20, strategy), "v").dial.strategy == expected


@pytest.mark.parametrize(
    ("status", "cause", "sip_status"),
    [
        (200, common_pb2.HANGUP_CAUSE_NORMAL_CLEARING, 0),
        (403, common_pb2.HANGUP_CAUSE_BARRED, 403),
        (404, common_pb2.HANGUP_CAUSE_UNALLOCATED_NUMBER, 404),
        (480, common_pb2.HANGUP_CAUSE_NO_ANSWER, 480),
        (486, common_pb2.HANGUP_CAUSE_USER_BUSY, 486),
        (500, common_pb2.HANGUP_CAUSE_OTHER_FAILURE, 500),
        (503, common_pb2.HANGUP_CAUSE_NO_ROUTE, 503),
        (603, common_pb2.HANGUP_CAUSE_CALL_REJECTED, 603),
    ],
)
def test_hangup_causes(status: int, cause: int, sip_status: int) -> None:
    hangup = contract.verb(verbs.Hangup("x", status), "v").hangup
    assert (hangup.cause, hangup.sip_status) == (cause, sip_status)


def _dial(status: int, **fields: object) -> pb.VerbResult:
    return pb.VerbResult(dial=pb.DialResult(status=status, **fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (
            pb.VerbResult(gather=pb.GatherResult(status=pb.GATHER_STATUS_INPUT, digits="2")),
            verbs.GatherResult("2"),
        ),
        (
            pb.VerbResult(gather=pb.GatherResult(status=pb.GATHER_STATUS_NO_INPUT, digits="9")),
            verbs.GatherResult(""),
        ),
        (
            pb.VerbResult(gather=pb.GatherResult(status=pb.GATHER_STATUS_INVALID, digits="77")),
            verbs.GatherResult("77"),
        ),
        (
            _dial(
                pb.DIAL_STATUS_ANSWERED,
                answered_index=1,
                targets=[
                    pb.TargetOutcome(index=0, label="103", status=pb.DIAL_STATUS_NO_ANSWER),
                    pb.TargetOutcome(index=1, label="104", status=pb.DIAL_STATUS_ANSWERED),
                ],
            ),
            verbs.DialResult(verbs.DialOutcome.ANSWERED, "104"),
        ),
        (_dial(pb.DIAL_STATUS_NO_ANSWER), verbs.DialResult(verbs.DialOutcome.NO_ANSWER)),
        (_dial(pb.DIAL_STATUS_UNAVAILABLE), verbs.DialResult(verbs.DialOutcome.NO_ANSWER)),
        (_dial(pb.DIAL_STATUS_BUSY), verbs.DialResult(verbs.DialOutcome.BUSY)),
        (_dial(pb.DIAL_STATUS_REJECTED), verbs.DialResult(verbs.DialOutcome.BUSY)),
        (_dial(pb.DIAL_STATUS_NOT_FOUND), verbs.DialResult(verbs.DialOutcome.FAILED)),
        (_dial(pb.DIAL_STATUS_CONGESTION), verbs.DialResult(verbs.DialOutcome.FAILED)),
        (_dial(pb.DIAL_STATUS_FAILED), verbs.DialResult(verbs.DialOutcome.FAILED)),
        (
            pb.VerbResult(queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_ANSWERED)),
            verbs.QueueResult(verbs.QueueOutcome.ANSWERED),
        ),
        (
            pb.VerbResult(queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_CALLBACK_ACCEPTED)),
            verbs.QueueResult(verbs.QueueOutcome.ANSWERED),
        ),
        (
            pb.VerbResult(
                queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_OVERFLOW, reason="max-wait")
            ),
            verbs.QueueResult(verbs.QueueOutcome.TIMEOUT),
        ),
        (
            pb.VerbResult(
                queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_OVERFLOW, reason="max-length")
            ),
            verbs.QueueResult(verbs.QueueOutcome.FULL),
        ),
        (
            pb.VerbResult(
                queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_OVERFLOW, reason="no-agents")
            ),
            verbs.QueueResult(verbs.QueueOutcome.CLOSED),
        ),
        (
            pb.VerbResult(queue=pb.QueueResult(outcome=pb.QUEUE_OUTCOME_UNAVAILABLE)),
            verbs.QueueResult(verbs.QueueOutcome.CLOSED),
        ),
        (
            pb.VerbResult(voicemail=pb.VoicemailResult(message_left=True)),
            verbs.Completed(),
        ),
        (pb.VerbResult(completed=pb.Completed()), verbs.Completed()),
        (pb.VerbResult(failed=pb.VerbFailed(reason="media-unavailable")), verbs.Completed()),
        (pb.VerbResult(), verbs.Completed()),
    ],
)
def test_verb_results(result: pb.VerbResult, expected: verbs.VerbResult) -> None:
    assert contract.verb_result(result) == expected


def test_call_context_by_direction() -> None:
    inbound = contract.call_context(
        pb.CallContext(
            call_id="c1",
            direction=common_pb2.CALL_DIRECTION_INBOUND,
            caller_number="+74951112233",
            callee_number="78123090000",
            did="+78123090000",
        )
    )
    assert (inbound.origin, inbound.caller, inbound.dialled, inbound.caller_user) == (
        Origin.TRUNK,
        "+74951112233",
        "+78123090000",
        None,
    )
    for direction in (common_pb2.CALL_DIRECTION_OUTBOUND, common_pb2.CALL_DIRECTION_INTERNAL):
        user = contract.call_context(
            pb.CallContext(
                call_id="c2",
                direction=direction,
                caller_number="101",
                caller_extension="101",
                callee_number="200",
            )
        )
        assert (user.origin, user.caller, user.dialled, user.caller_user) == (
            Origin.USER,
            "101",
            "200",
            "101",
        )
    # An edge that could not tell: a known calling user makes it a user's call.
    unknown = contract.call_context(pb.CallContext(caller_extension="102", callee_number="101"))
    assert unknown.origin is Origin.USER
    assert contract.call_context(pb.CallContext(callee_number="101")).origin is Origin.TRUNK
