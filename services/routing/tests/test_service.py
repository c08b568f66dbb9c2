"""The Routing service over real gRPC: Plan/Continue for the issue's scenario, ValidateConfig,
configuration loading failures, and the reason on the span and in the log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.routing.v1 import routing_pb2 as pb
from callmesh_core.logging import FIELDS_ATTR

from .harness import (
    AFTER_HOURS,
    OFFICE_HOURS,
    Routing,
    example_document,
    inbound_call,
    kinds,
    running_routing,
)

CALLER = "+74951112233"


@pytest.fixture(scope="module")
async def routing(postgres_dsn: str) -> AsyncIterator[Routing]:
    async with running_routing(postgres_dsn, config_wait_seconds=0.5) as running:
        yield running


def gather_result(verb_id: str, digits: str) -> pb.VerbResult:
    return pb.VerbResult(
        verb_id=verb_id,
        gather=pb.GatherResult(status=pb.GATHER_STATUS_INPUT, digits=digits, attempts=1),
    )


async def test_greeting_menu_two_reaches_the_support_ring_group(
    routing: Routing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callmesh.routing.test")
    tenant = routing.new_tenant()
    routing.clock.now = OFFICE_HOURS
    call = inbound_call(tenant, CALLER)

    plan = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
    assert kinds(plan) == ["answer", "play", "gather"]
    assert plan.verbs[1].play.items[0].prompt == "welcome"
    gather = plan.verbs[2].gather
    assert gather.prompts[0].prompt == "main-menu"
    assert (gather.min_digits, gather.max_digits, gather.terminators) == (1, 3, "#")
    assert gather.first_digit_timeout.seconds == 5 and gather.retries == 0
    assert "time condition 'office-hours' matched" in plan.reason
    assert plan.scenario_id == "main" and plan.scenario_version == 1
    assert plan.state

    pressed = await routing.stub.Continue(
        pb.ContinueRequest(
            call=call, state=plan.state, result=gather_result(plan.verbs[2].id, "2")
        ),
        timeout=5,
    )
    assert kinds(pressed) == ["dial"]
    dial = pressed.verbs[0].dial
    assert dial.strategy == pb.RING_STRATEGY_SEQUENTIAL
    assert [t.extension.extension for t in dial.targets] == ["103", "104"]
    # Sequential, 15 s each: 103 rings 0-15 s, then 104 15-30 s.
    assert [(t.start_after.seconds, t.timeout.seconds) for t in dial.targets] == [(0, 15), (15, 15)]
    assert "menu 'menu': caller pressed 2" in pressed.reason
    assert "ring group 'support': sequential ringing 103, 104" in pressed.reason

    # Nobody answers: the step's own no-answer goes to the support queue.
    no_answer = await routing.stub.Continue(
        pb.ContinueRequest(
            call=call,
            state=pressed.state,
            result=pb.VerbResult(
                verb_id=pressed.verbs[0].id, dial=pb.DialResult(status=pb.DIAL_STATUS_NO_ANSWER)
            ),
        ),
        timeout=5,
    )
    assert kinds(no_answer) == ["queue"]
    assert no_answer.verbs[0].queue.queue_id == "support"
    assert "dial ended: no_answer" in no_answer.reason

    # The reason is on the RPC's span and in a structured log line with the call id.
    spans = [
        s
        for s in routing.spans.get_finished_spans()
        if s.attributes is not None and s.attributes.get("callmesh.call.id") == call.call_id
    ]
    reasons = {s.attributes.get("callmesh.routing.reason") for s in spans if s.attributes}
    assert {plan.reason, pressed.reason, no_answer.reason} <= reasons
    logged = [
        getattr(r, FIELDS_ATTR)
        for r in caplog.records
        if r.getMessage() == "routing_decision"
        and getattr(r, FIELDS_ATTR)["call_id"] == call.call_id
    ]
    assert [f["reason"] for f in logged] == [plan.reason, pressed.reason, no_answer.reason]
    assert [f["rpc"] for f in logged] == ["plan", "continue", "continue"]


async def test_after_hours_the_same_number_offers_voicemail(routing: Routing) -> None:
    tenant = routing.new_tenant()
    routing.clock.now = AFTER_HOURS
    try:
        plan = await routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5)
    finally:
        routing.clock.now = OFFICE_HOURS
    assert kinds(plan) == ["answer", "play", "voicemail"]
    assert plan.verbs[1].play.items[0].prompt == "after-hours"
    assert plan.verbs[2].voicemail.box == "general"
    assert "time condition 'office-hours' not matched" in plan.reason
    assert "(Mon 2026-11-23 21:00 local)" in plan.reason


async def test_blocked_caller_is_rejected_before_answer(routing: Routing) -> None:
    tenant = routing.new_tenant()
    plan = await routing.stub.Plan(
        pb.PlanRequest(call=inbound_call(tenant, "+79001234567")), timeout=5
    )
    assert kinds(plan) == ["hangup"]
    hangup = plan.verbs[0].hangup
    assert (hangup.sip_status, hangup.cause) == (603, common_pb2.HANGUP_CAUSE_CALL_REJECTED)
    assert plan.state == b""  # nothing left to continue


async def test_outbound_call_gets_trunks_cheapest_first(routing: Routing) -> None:
    tenant = routing.new_tenant()
    call = pb.CallContext(
        call_id="out-1",
        tenant_id=tenant,
        direction=common_pb2.CALL_DIRECTION_OUTBOUND,
        caller_number="101",
        caller_extension="101",
        caller_user_id="u-101",
        callee_number="84951234567",
    )
    plan = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
    assert kinds(plan) == ["dial"]
    target = plan.verbs[0].dial.targets[0]
    assert target.number.e164 == "+74951234567"
    # 7495: mts 0.55 < rostelecom 0.60 < intl 3.0 (prefix 7).
    assert [r.trunk_id for r in target.number.routes] == ["mts", "rostelecom", "intl"]
    assert "LCR: +74951234567 via mts@0.55, rostelecom@0.6, intl@3.0" in plan.reason


async def test_unreadable_state_falls_back_to_the_default_route(routing: Routing) -> None:
    tenant = routing.new_tenant()
    reply = await routing.stub.Continue(
        pb.ContinueRequest(
            call=inbound_call(tenant, CALLER),
            state=b"\xff not ours",
            result=gather_result("x", "1"),
        ),
        timeout=5,
    )
    assert kinds(reply) == ["play", "voicemail"]
    assert reply.verbs[0].play.items[0].prompt == "technical-difficulties"
    assert "unreadable state token; fell back to the default route" in reply.reason


async def test_concurrent_first_calls_share_one_load(routing: Routing) -> None:
    tenant = routing.new_tenant()
    replies = await asyncio.gather(
        *(
            routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5)
            for _ in range(20)
        )
    )
    assert {kinds(r)[-1] for r in replies} == {"gather"}
    assert routing.provisioning.fetches[tenant] == 1


async def test_tenant_without_configuration_gets_unavailable_at_once(routing: Routing) -> None:
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await routing.stub.Plan(
            pb.PlanRequest(call=inbound_call("no-such-tenant", CALLER)), timeout=5
        )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "has no routing configuration" in (caught.value.details() or "")
    assert time.perf_counter() - started < 0.5
    # Remembered for a moment: the next call does not ask the api again.
    with pytest.raises(grpc.aio.AioRpcError):
        await routing.stub.Plan(
            pb.PlanRequest(call=inbound_call("no-such-tenant", CALLER)), timeout=5
        )
    assert routing.provisioning.fetches["no-such-tenant"] == 1


async def test_tenant_whose_configuration_does_not_arrive_gets_unavailable_quickly(
    routing: Routing,
) -> None:
    tenant = routing.new_tenant()
    routing.provisioning.hanging.add(tenant)
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5)
    elapsed = time.perf_counter() - started
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "not loaded within" in (caught.value.details() or "")
    assert 0.4 < elapsed < 1.0  # the configured 0.5 s wait, not the 5 s deadline
    # A caller deadline shorter than the wait is honoured with a clear answer, not a timeout.
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=0.25)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert time.perf_counter() - started < 0.25


async def test_tenant_whose_document_is_unusable_gets_unavailable(routing: Routing) -> None:
    document = example_document()
    document["default_scenario"] = "gone"
    tenant = routing.new_tenant(document)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "default_scenario: unknown scenario 'gone'" in (caught.value.details() or "")


async def test_dangling_reference_degrades_one_step_not_the_tenant(routing: Routing) -> None:
    # Saved valid, then the ring group was deleted: lenient loading keeps the tenant running
    # and the step falls back to the default route, with the reason saying so.
    document = example_document()
    document["directory"]["ring_groups"] = [
        g for g in document["directory"]["ring_groups"] if g["name"] != "support"
    ]
    tenant = routing.new_tenant(document)
    call = inbound_call(tenant, CALLER)
    plan = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
    reply = await routing.stub.Continue(
        pb.ContinueRequest(call=call, state=plan.state, result=gather_result("m", "2")), timeout=5
    )
    assert kinds(reply) == ["play", "voicemail"]
    assert "ring group 'support' not found; fell back to the default route" in reply.reason


async def test_validate_config_lists_every_problem(routing: Routing) -> None:
    document = example_document()
    steps = document["scenarios"][0]["steps"]
    steps["menu"]["options"]["4"] = "nowhere"  # unknown step
    steps["orphan"] = {"kind": "hangup"}  # never reached
    steps["welcome"]["prompt"] = ""  # missing prompt
    steps["sales"]["group"] = "marketing"  # unknown ring group
    document["inbound"]["+78123090002"] = "no-such-scenario"
    document["lcr"]["rates"]["mts"]["7x"] = 0.5  # not digits
    document["lcr"]["rates"]["mts"]["7921"] = "weekend-special"  # unknown tariff
    document["tenant_id"] = "someone-else"
    reply = await routing.stub.ValidateConfig(
        pb.ValidateConfigRequest(tenant_id="t-1", document_json=json.dumps(document)), timeout=5
    )
    found = [(p.path, p.message) for p in reply.problems]
    assert found == [
        ("tenant_id", "is 'someone-else', but the document is for tenant 't-1'"),
        ("scenarios.0.steps.welcome.prompt", "prompt is missing"),
        ("scenarios.0.steps.menu.options.4", "unknown step 'nowhere'"),
        ("scenarios.0.steps.sales.group", "unknown ring group 'marketing'"),
        ("scenarios.0.steps.orphan", "can never be reached from the start"),
        ("inbound.+78123090002", "unknown scenario 'no-such-scenario'"),
        ("lcr.rates.mts.7x", "a prefix is digits only"),
        ("lcr.rates.mts.7921", "'weekend-special' is neither a price nor a tariff name"),
    ]


async def test_validate_config_accepts_the_example_and_reports_bad_json(routing: Routing) -> None:
    ok = await routing.stub.ValidateConfig(
        pb.ValidateConfigRequest(tenant_id="t-1", document_json=json.dumps(example_document())),
        timeout=5,
    )
    assert list(ok.problems) == []
    bad = await routing.stub.ValidateConfig(
        pb.ValidateConfigRequest(tenant_id="t-1", document_json="{not json"), timeout=5
    )
    assert [p.path for p in bad.problems] == [""]
    assert bad.problems[0].message.startswith("not valid JSON")


async def test_the_reply_says_which_version_decided(routing: Routing) -> None:
    tenant = routing.new_tenant(version=7)
    plan = await routing.stub.Plan(pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5)
    assert plan.scenario_version == 7
    assert all(v.id.startswith("main#") for v in plan.verbs)
    assert len({v.id for v in plan.verbs}) == len(plan.verbs)


async def test_validate_config_of_a_big_rate_table(routing: Routing) -> None:
    document = example_document()
    document["lcr"]["rates"]["intl"] = {str(4_400_000 + n): 0.01 * (n % 97) for n in range(80_000)}
    document["lcr"]["rates"]["intl"]["44x"] = 1
    document_json = json.dumps(document)
    assert len(document_json) > 1 << 20  # large enough to be checked off the event loop
    reply = await routing.stub.ValidateConfig(
        pb.ValidateConfigRequest(tenant_id="t-1", document_json=document_json), timeout=10
    )
    assert [(p.path, p.message) for p in reply.problems] == [
        ("lcr.rates.intl.44x", "a prefix is digits only")
    ]
