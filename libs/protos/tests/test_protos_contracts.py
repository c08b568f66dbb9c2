"""Contract checks on the generated stubs: the shapes later services rely on."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import callmesh
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import (
    calls_pb2,
    config_pb2,
    fax_pb2,
    options_pb2,
    presence_pb2,
    recordings_pb2,
    voicemail_pb2,
)
from callmesh.routing.v1 import routing_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def all_pb2_modules() -> list[ModuleType]:
    names = [
        info.name
        for info in pkgutil.walk_packages(callmesh.__path__, prefix="callmesh.")
        if info.name.endswith("_pb2")
    ]
    return [importlib.import_module(name) for name in sorted(names)]


def test_every_generated_module_imports_under_its_package_path() -> None:
    modules = all_pb2_modules()
    packages = {module.DESCRIPTOR.package for module in modules}
    assert packages == {
        "callmesh.common.v1",
        "callmesh.routing.v1",
        "callmesh.media.v1",
        "callmesh.queue.v1",
        "callmesh.provisioning.v1",
        "callmesh.crm.v1",
        "callmesh.recording.v1",
        "callmesh.events.v1",
    }
    for module in modules:
        # The proto package must match the directory (ARCHITECTURE §9), so the import path is
        # the package name.
        assert module.__name__.startswith(module.DESCRIPTOR.package + ".")
        importlib.import_module(module.__name__ + "_grpc")


# service -> {method: (client_streaming, server_streaming)}
EXPECTED_SERVICES: dict[str, dict[str, tuple[bool, bool]]] = {
    "callmesh.routing.v1.Routing": {
        "Plan": (False, False),
        "Continue": (False, False),
        "ValidateConfig": (False, False),
    },
    "callmesh.media.v1.MediaControl": {
        **{
            name: (False, False)
            for name in (
                "CreateEndpoint",
                "UpdateEndpoint",
                "DestroyEndpoint",
                "Bridge",
                "Unbridge",
                "Play",
                "StopPlay",
                "Record",
                "CollectDigits",
                "CreateConference",
                "DestroyConference",
                "JoinConference",
                "LeaveConference",
                "MuteParticipant",
                "SetListenOnly",
                "Whisper",
                "GetLoad",
            )
        },
        "Events": (False, True),
    },
    "callmesh.queue.v1.Queue": {
        "Wait": (True, True),
        "AgentLogin": (False, False),
        "AgentLogout": (False, False),
        "AgentPause": (False, False),
        "AgentUnpause": (False, False),
        "GetAgentState": (False, False),
        "GetQueueStats": (False, False),
        "WatchQueueStats": (False, True),
    },
    "callmesh.provisioning.v1.Provisioning": {
        name: (False, False)
        for name in (
            "UpsertTenant",
            "DeleteTenant",
            "GetTenant",
            "ListTenants",
            "UpsertUser",
            "DeleteUser",
            "GetUser",
            "GetUserByExtension",
            "ListUsers",
            "UpsertNumber",
            "DeleteNumber",
            "GetNumber",
            "ListNumbers",
            "UpsertTrunk",
            "DeleteTrunk",
            "GetTrunk",
            "GetTrunkBySource",
            "ListTrunks",
            "GetScenario",
            "GetRoutingConfig",
        )
    }
    | {"StreamRates": (False, True)},
    "callmesh.crm.v1.Crm": {"LookupResponsible": (False, False)},
    "callmesh.recording.v1.Recording": {
        name: (False, False)
        for name in (
            "StartRecording",
            "StopRecording",
            "GetRecording",
            "ListRecordingsByCall",
            "GetDownloadUrl",
        )
    },
}


@pytest.mark.parametrize("service_name", sorted(EXPECTED_SERVICES))
def test_service_exists_with_its_methods(service_name: str) -> None:
    all_pb2_modules()  # registers every file in the default pool
    service = descriptor_pool.Default().FindServiceByName(service_name)
    methods = {
        method.name: (method.client_streaming, method.server_streaming)
        for method in service.methods
    }
    assert methods == EXPECTED_SERVICES[service_name]


VERBS = {
    "answer",
    "play",
    "say_wait",
    "gather",
    "dial",
    "queue",
    "voicemail",
    "record",
    "transfer",
    "park",
    "pickup",
    "conference",
    "callback_request",
    "hangup",
}


def test_verb_oneof_lists_every_verb() -> None:
    kind = routing_pb2.Verb.DESCRIPTOR.oneofs_by_name["kind"]
    assert {field.name for field in kind.fields} == VERBS


def test_every_verb_that_yields_a_result_has_a_result_type() -> None:
    outcome = routing_pb2.VerbResult.DESCRIPTOR.oneofs_by_name["outcome"]
    results = {field.name for field in outcome.fields}
    # Verbs that only act (no result): they never end a verb list early.
    no_result = {"answer", "play", "say_wait", "record", "hangup"}
    assert results - {"completed", "failed"} == VERBS - no_result


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def test_plan_reply_with_every_dial_target_round_trips_through_bytes() -> None:
    reply = routing_pb2.PlanReply(
        reason="ivr:main-menu",
        state=b"\x01step=menu;retries=2",
        verbs=[
            routing_pb2.Verb(id="s1", answer=routing_pb2.AnswerVerb()),
            routing_pb2.Verb(
                id="s2",
                gather=routing_pb2.GatherVerb(
                    prompts=[common_pb2.MediaSource(prompt="ivr-main")],
                    max_digits=3,
                    terminators="#",
                    inter_digit_timeout=seconds(2.5),
                    retries=2,
                    valid_inputs=["1", "2", "101"],
                ),
            ),
            routing_pb2.Verb(
                id="s3",
                dial=routing_pb2.DialVerb(
                    strategy=routing_pb2.RING_STRATEGY_CASCADING,
                    timeout=seconds(30),
                    step_delay=seconds(5),
                    caller_id=routing_pb2.CallerIdRule(
                        mode=routing_pb2.CALLER_ID_MODE_PASS_THROUGH, name_prefix="Sales: "
                    ),
                    ringback=routing_pb2.Ringback(
                        mode=routing_pb2.RINGBACK_MODE_MEDIA,
                        music=common_pb2.MediaSource(music_class="default"),
                    ),
                    targets=[
                        routing_pb2.DialTarget(
                            extension=routing_pb2.ExtensionTarget(extension="101"),
                            timeout=seconds(15),
                        ),
                        routing_pb2.DialTarget(user=routing_pb2.UserTarget(user_id="u-7")),
                        routing_pb2.DialTarget(
                            number=routing_pb2.NumberTarget(
                                e164="+78121234567",
                                routes=[
                                    routing_pb2.TrunkRoute(trunk_id="cheap", dialed="88121234567"),
                                    routing_pb2.TrunkRoute(trunk_id="backup"),
                                ],
                            )
                        ),
                        routing_pb2.DialTarget(
                            trunk=routing_pb2.TrunkTarget(trunk_id="t1", dialed="0012125550100")
                        ),
                        routing_pb2.DialTarget(
                            sip_uri=routing_pb2.SipUriTarget(uri="sip:help@partner.example")
                        ),
                    ],
                ),
            ),
            routing_pb2.Verb(
                id="s4",
                hangup=routing_pb2.HangupVerb(
                    cause=common_pb2.HANGUP_CAUSE_USER_BUSY, sip_status=486
                ),
            ),
        ],
    )

    wire = reply.SerializeToString(deterministic=True)
    decoded = routing_pb2.PlanReply.FromString(wire)

    assert decoded == reply
    assert [verb.WhichOneof("kind") for verb in decoded.verbs] == [
        "answer",
        "gather",
        "dial",
        "hangup",
    ]
    dial = decoded.verbs[2].dial
    assert [target.WhichOneof("kind") for target in dial.targets] == [
        "extension",
        "user",
        "number",
        "trunk",
        "sip_uri",
    ]
    assert dial.targets[2].number.routes[1].trunk_id == "backup"
    assert dial.step_delay.ToNanoseconds() == 5_000_000_000
    assert decoded.verbs[1].gather.inter_digit_timeout.ToMilliseconds() == 2500
    assert decoded.verbs[3].hangup.sip_status == 486


def test_setting_another_verb_clears_the_previous_one() -> None:
    verb = routing_pb2.Verb(play=routing_pb2.PlayVerb(times=2))
    verb.hangup.cause = common_pb2.HANGUP_CAUSE_NORMAL_CLEARING
    decoded = routing_pb2.Verb.FromString(verb.SerializeToString())
    assert decoded.WhichOneof("kind") == "hangup"
    assert not decoded.HasField("play")


def test_continue_request_carries_result_and_state_unchanged() -> None:
    state = bytes(range(256))  # opaque: any bytes must survive
    request = routing_pb2.ContinueRequest(
        call=routing_pb2.CallContext(call_id="c-1", tenant_id="acme"),
        state=state,
        result=routing_pb2.VerbResult(
            verb_id="s3",
            dial=routing_pb2.DialResult(
                status=routing_pb2.DIAL_STATUS_CONGESTION,
                targets=[
                    routing_pb2.TargetOutcome(
                        index=2,
                        status=routing_pb2.DIAL_STATUS_CONGESTION,
                        sip_status=503,
                        trunk_id="backup",
                    )
                ],
            ),
        ),
    )
    decoded = routing_pb2.ContinueRequest.FromString(request.SerializeToString())
    assert decoded.state == state
    assert decoded.result.WhichOneof("outcome") == "dial"
    assert decoded.result.dial.targets[0].sip_status == 503


# message -> (topic, key template)
EVENT_TOPICS: dict[Descriptor, tuple[str, str]] = {
    calls_pb2.CallEvent.DESCRIPTOR: ("callmesh.calls.v1", "call_id"),
    presence_pb2.PresenceEvent.DESCRIPTOR: ("callmesh.presence.v1", "tenant_id/extension"),
    recordings_pb2.RecordingEvent.DESCRIPTOR: ("callmesh.recordings.v1", "call_id"),
    voicemail_pb2.VoicemailEvent.DESCRIPTOR: ("callmesh.voicemail.v1", "tenant_id/box"),
    fax_pb2.FaxEvent.DESCRIPTOR: ("callmesh.fax.v1", "call_id"),
    config_pb2.ConfigChanged.DESCRIPTOR: ("callmesh.config.v1", "tenant_id"),
}


def topic_messages() -> list[Descriptor]:
    """Every message in callmesh.events.v1 that declares a Kafka topic."""
    found = []
    for module in all_pb2_modules():
        if module.DESCRIPTOR.package != "callmesh.events.v1":
            continue
        for message in module.DESCRIPTOR.message_types_by_name.values():
            if message.GetOptions().HasExtension(options_pb2.kafka_topic):
                found.append(message)
    return found


def test_each_topic_has_exactly_one_event_message() -> None:
    declared = {message.full_name for message in topic_messages()}
    assert declared == {message.full_name for message in EVENT_TOPICS}


@pytest.mark.parametrize("message", list(EVENT_TOPICS), ids=lambda d: d.name)
def test_event_declares_its_topic_and_key_fields(message: Descriptor) -> None:
    topic, key = EVENT_TOPICS[message]
    options = message.GetOptions()
    assert options.Extensions[options_pb2.kafka_topic] == topic
    assert options.Extensions[options_pb2.kafka_key] == key
    for name in key.split("/"):
        assert message.fields_by_name[name].type == FieldDescriptor.TYPE_STRING


@pytest.mark.parametrize("message", list(EVENT_TOPICS), ids=lambda d: d.name)
def test_event_has_id_tenant_and_time(message: Descriptor) -> None:
    fields = message.fields_by_name
    assert fields["event_id"].type == FieldDescriptor.TYPE_STRING
    assert fields["tenant_id"].type == FieldDescriptor.TYPE_STRING
    occurred_at = fields["occurred_at"].message_type
    assert occurred_at is not None
    assert occurred_at.full_name == Timestamp.DESCRIPTOR.full_name


def test_call_event_is_keyed_by_call_leg_and_seq() -> None:
    fields = calls_pb2.CallEvent.DESCRIPTOR.fields_by_name
    assert fields["call_id"].type == FieldDescriptor.TYPE_STRING
    assert fields["leg"].type == FieldDescriptor.TYPE_STRING
    assert fields["seq"].type == FieldDescriptor.TYPE_UINT64
    kinds = {f.name for f in calls_pb2.CallEvent.DESCRIPTOR.oneofs_by_name["kind"].fields}
    assert {"attempt", "ringing", "answered", "transferred", "ended"} <= kinds
    assert {"queue_joined", "queue_left", "queue_abandoned", "queue_answered"} <= kinds


def test_events_about_a_call_carry_the_call_id() -> None:
    for message in (
        recordings_pb2.RecordingEvent,
        voicemail_pb2.VoicemailEvent,
        fax_pb2.FaxEvent,
    ):
        assert message.DESCRIPTOR.fields_by_name["call_id"].type == FieldDescriptor.TYPE_STRING


def test_call_ended_event_round_trips_with_durations() -> None:
    event = calls_pb2.CallEvent(
        event_id="e-1",
        call_id="c-1",
        leg="a",
        seq=4,
        tenant_id="acme",
        ended=calls_pb2.CallEnded(
            outcome=calls_pb2.CALL_OUTCOME_ANSWERED,
            cause=common_pb2.HANGUP_CAUSE_NORMAL_CLEARING,
            hangup_side=calls_pb2.HANGUP_SIDE_CALLEE,
            talk_duration=seconds(61.5),
            post_dial_delay=seconds(1.2),
        ),
    )
    event.occurred_at.FromSeconds(1_795_000_000)
    decoded = calls_pb2.CallEvent.FromString(event.SerializeToString())
    assert (decoded.call_id, decoded.leg, decoded.seq) == ("c-1", "a", 4)
    assert decoded.WhichOneof("kind") == "ended"
    assert decoded.ended.talk_duration.ToMilliseconds() == 61_500
    assert decoded.occurred_at.ToSeconds() == 1_795_000_000


def test_provisioning_users_carry_only_digest_hashes() -> None:
    from callmesh.provisioning.v1 import provisioning_pb2

    def field_names(message: Descriptor, seen: set[str]) -> set[str]:
        if message.full_name in seen:
            return set()
        seen.add(message.full_name)
        names = {f"{message.name}.{field.name}" for field in message.fields}
        for field in message.fields:
            if field.message_type is not None:
                names |= field_names(field.message_type, seen)
        return names

    user_fields = field_names(provisioning_pb2.User.DESCRIPTOR, set())
    assert {"DigestCredentials.ha1_md5", "DigestCredentials.ha1_sha256"} <= user_fields
    assert not [name for name in user_fields if "password" in name]

    everything: set[str] = set()
    for message in provisioning_pb2.DESCRIPTOR.message_types_by_name.values():
        everything |= field_names(message, set())
    # The only password in the contract is a trunk's, which sip-edge needs to answer a
    # carrier's digest challenge.
    assert {name for name in everything if "password" in name} == {
        "RegistrationAuth.password",
        "RegistrationAuth.password_secret",
    }
