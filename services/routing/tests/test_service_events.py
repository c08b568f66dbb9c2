"""Routing's Kafka consumers end to end: ConfigChanged invalidates the tenant cache, and answered
calls on callmesh.calls.v1 become ICM history that the next Plan uses (real Kafka topics,
real PostgreSQL, real gRPC)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta

import pytest
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2, config_pb2
from callmesh.routing.v1 import routing_pb2 as pb
from callmesh_core.kafka import EventConsumer, EventProducer, ensure_topics
from google.protobuf.message import Message

from .harness import ICM_DID, OFFICE_HOURS, Routing, example_document, inbound_call, kinds
from .harness import running_routing as start_routing


@pytest.fixture(scope="module")
async def routing(postgres_dsn: str) -> AsyncIterator[Routing]:
    async with start_routing(postgres_dsn, with_crm=True) as running:
        yield running


@pytest.fixture(scope="module")
async def producer(kafka_bootstrap: str, routing: Routing) -> AsyncIterator[EventProducer]:
    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=routing.tracer)
    await producer.start()
    yield producer
    await producer.stop()


async def consume(
    kafka_bootstrap: str,
    routing: Routing,
    producer: EventProducer,
    message_type: type[Message],
    handler: Callable[..., Awaitable[None]],
) -> str:
    """A fresh topic and a running consumer of it (stopped with the module's routing)."""
    topic = f"test.routing.{uuid.uuid4().hex[:12]}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)
    consumer: EventConsumer[Message] = EventConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=f"routing-test-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        message_type=message_type,
        handler=handler,
        dlq_producer=producer,
        tracer=routing.tracer,
        log=routing.log,
        retry_backoff_seconds=0.01,
    )
    await consumer.start()
    routing.closers.append(consumer.stop)
    return topic


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in time: {what}")
        await asyncio.sleep(0.05)


async def test_config_change_event_makes_the_next_plan_use_the_new_version(
    kafka_bootstrap: str, routing: Routing, producer: EventProducer
) -> None:
    topic = await consume(
        kafka_bootstrap,
        routing,
        producer,
        config_pb2.ConfigChanged,
        routing.tenants.on_config_changed,
    )
    tenant = routing.new_tenant(version=1)
    call = inbound_call(tenant, "+74951112233")
    first = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
    assert (first.scenario_version, first.verbs[1].play.items[0].prompt) == (1, "welcome")

    document = example_document()
    document["scenarios"][0]["steps"]["welcome"]["prompt"] = "main-menu"  # a new greeting
    routing.provisioning.put(tenant, document, 2)
    # Cached: without an event the old version keeps answering, with no new fetch.
    again = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
    assert again.scenario_version == 1 and routing.provisioning.fetches[tenant] == 1

    # Another tenant's change and a user change leave this tenant's cache alone.
    for change in (
        config_pb2.ConfigChanged(
            tenant_id=str(uuid.uuid4()), kind=config_pb2.CONFIG_KIND_SCENARIO, version=5
        ),
        config_pb2.ConfigChanged(tenant_id=tenant, kind=config_pb2.CONFIG_KIND_USER, version=9),
        config_pb2.ConfigChanged(tenant_id=tenant, kind=config_pb2.CONFIG_KIND_SCENARIO, version=2),
    ):
        await producer.send(topic, change, key=change.tenant_id)

    async def new_version_served() -> bool:
        reply = await routing.stub.Plan(pb.PlanRequest(call=call), timeout=5)
        return reply.scenario_version == 2 and reply.verbs[1].play.items[0].prompt == "main-menu"

    await eventually(new_version_served, "version 2 served after ConfigChanged")
    assert routing.provisioning.fetches[tenant] == 2

    # A redelivered (or older) event for a version already held loads nothing.
    stale = config_pb2.ConfigChanged(
        tenant_id=tenant, kind=config_pb2.CONFIG_KIND_SCENARIO, version=2
    )
    await producer.send(topic, stale, key=tenant)
    marker_tenant = routing.new_tenant()
    await routing.stub.Plan(pb.PlanRequest(call=inbound_call(marker_tenant, "+74951112233")))
    routing.provisioning.put(marker_tenant, example_document(), 2)
    marker = config_pb2.ConfigChanged(
        tenant_id=marker_tenant, kind=config_pb2.CONFIG_KIND_SCENARIO, version=2
    )
    # Same key as `stale`, so once the marker's reload happens the stale event was handled.
    await producer.send(topic, marker, key=tenant)

    async def marker_reloaded() -> bool:
        return routing.provisioning.fetches.get(marker_tenant, 0) == 2

    await eventually(marker_reloaded, "marker event handled")
    assert routing.provisioning.fetches[tenant] == 2


def _event(
    call_id: str,
    tenant: str,
    leg: str,
    seq: int,
    at: datetime,
    **kind: Message,
) -> calls_pb2.CallEvent:
    event = calls_pb2.CallEvent(
        event_id=str(uuid.uuid4()), call_id=call_id, leg=leg, seq=seq, tenant_id=tenant, **kind
    )
    event.occurred_at.FromDatetime(at)
    return event


def answered_inbound_call(
    tenant: str, caller: str, extension: str, at: datetime
) -> list[calls_pb2.CallEvent]:
    call_id = str(uuid.uuid4())
    inbound = common_pb2.CALL_DIRECTION_INBOUND
    return [
        _event(
            call_id,
            tenant,
            "a",
            1,
            at,
            attempt=calls_pb2.CallAttempt(direction=inbound, caller_number=caller, did=ICM_DID),
        ),
        _event(
            call_id,
            tenant,
            "b1",
            1,
            at,
            attempt=calls_pb2.CallAttempt(direction=inbound, callee_extension=extension),
        ),
        _event(
            call_id,
            tenant,
            "b1",
            2,
            at + timedelta(seconds=8),
            answered=calls_pb2.CallAnswered(
                answered_by_user_id=f"user-{extension}", answered_by_extension=extension
            ),
        ),
        _event(
            call_id,
            tenant,
            "a",
            2,
            at + timedelta(minutes=3),
            ended=calls_pb2.CallEnded(outcome=calls_pb2.CALL_OUTCOME_ANSWERED),
        ),
    ]


def answered_outbound_call(
    tenant: str, extension: str, dialled: str, number: str, at: datetime
) -> list[calls_pb2.CallEvent]:
    """A user dials a national form; the trunk b-leg carries the E.164 number."""
    call_id = str(uuid.uuid4())
    outbound = common_pb2.CALL_DIRECTION_OUTBOUND
    return [
        _event(
            call_id,
            tenant,
            "a",
            1,
            at,
            attempt=calls_pb2.CallAttempt(
                direction=outbound,
                caller_number=extension,
                caller_user_id=f"user-{extension}",
                callee_number=dialled,
            ),
        ),
        _event(
            call_id,
            tenant,
            "b1",
            1,
            at,
            attempt=calls_pb2.CallAttempt(
                direction=outbound, callee_number=number, trunk_id="rostelecom"
            ),
        ),
        _event(call_id, tenant, "b1", 2, at, answered=calls_pb2.CallAnswered()),
    ]


async def test_icm_routes_a_repeat_caller_to_the_last_employee_within_the_window(
    kafka_bootstrap: str, routing: Routing, producer: EventProducer
) -> None:
    topic = await consume(
        kafka_bootstrap, routing, producer, calls_pb2.CallEvent, routing.history.handle
    )
    tenant = routing.new_tenant()
    now = OFFICE_HOURS
    routing.clock.now = now
    recent, old, outbound_party, crm_only = (
        "+79165550101",
        "+79165550202",
        "+74957770303",
        "+79165550404",
    )
    calls = [
        # The caller talked with 103 a week ago and with 104 three days ago: 104 is the last.
        answered_inbound_call(tenant, recent, "103", now - timedelta(days=7)),
        answered_inbound_call(tenant, recent, "104", now - timedelta(days=3)),
        # Only history older than the 30-day window.
        answered_inbound_call(tenant, old, "102", now - timedelta(days=31)),
        # 102 called this party two days ago.
        answered_outbound_call(
            tenant, "102", "84957770303", outbound_party, now - timedelta(days=2)
        ),
    ]
    for events in calls:
        for event in events:
            await producer.send(topic, event, key=event.call_id, event_id=event.event_id)
    # Redelivery: the same answer again changes nothing.
    duplicate = calls[1][2]
    await producer.send(topic, duplicate, key=duplicate.call_id, event_id=duplicate.event_id)

    async def recorded() -> bool:
        count: int = await routing.pool.fetchval(
            "SELECT count(*) FROM icm_contacts WHERE tenant_id = $1", tenant
        )
        return count == 4

    await eventually(recorded, "four conversations recorded")
    open_calls = await routing.pool.fetchval(
        "SELECT count(*) FROM icm_calls WHERE tenant_id = $1", tenant
    )
    assert open_calls == 1  # only the outbound call has not ended; ended calls are forgotten

    async def plan(caller: str) -> pb.PlanReply:
        reply: pb.PlanReply = await routing.stub.Plan(
            pb.PlanRequest(call=inbound_call(tenant, caller, did=ICM_DID)), timeout=5
        )
        return reply

    repeat = await plan(recent)
    assert kinds(repeat) == ["dial"]
    assert [t.extension.extension for t in repeat.verbs[0].dial.targets] == ["104"]
    assert "ICM: last talked to 104 on 2026-11-20 (history)" in repeat.reason

    called_out = await plan(outbound_party)
    assert [t.extension.extension for t in called_out.verbs[0].dial.targets] == ["102"]
    assert "ICM: last talked to 102 on 2026-11-21 (history)" in called_out.reason

    # Older than the window: nobody, so the scenario's default target (reception, 101).
    too_old = await plan(old)
    assert [t.extension.extension for t in too_old.verbs[0].dial.targets] == ["101"]
    assert f"ICM: nobody talked with {old} in the last 30 days" in too_old.reason

    # The CRM is the second source: it knows a manager for a caller history does not.
    routing.crm.responsible[crm_only] = "103"
    from_crm = await plan(crm_only)
    assert [t.extension.extension for t in from_crm.verbs[0].dial.targets] == ["103"]
    assert "ICM: last talked to 103 on 2026-11-23 (crm:amocrm)" in from_crm.reason
    # History wins over the CRM when both know the caller.
    routing.crm.responsible[recent] = "102"
    assert "last talked to 104" in (await plan(recent)).reason

    # A call whose end was lost is swept once a later call ends two days after it began.
    dangling = answered_inbound_call(tenant, "+79165550505", "103", now - timedelta(days=10))[0]
    await producer.send(topic, dangling, key=dangling.call_id, event_id=dangling.event_id)

    async def open_calls_are(count: int) -> bool:
        found: int = await routing.pool.fetchval(
            "SELECT count(*) FROM icm_calls WHERE tenant_id = $1", tenant
        )
        return found == count

    await eventually(lambda: open_calls_are(2), "the dangling call recorded")
    for event in answered_inbound_call(tenant, recent, "104", now - timedelta(hours=1)):
        await producer.send(topic, event, key=event.call_id, event_id=event.event_id)
    await eventually(lambda: open_calls_are(1), "the dangling call swept")
    assert await routing.pool.fetchval(
        "SELECT count(*) FROM icm_calls WHERE call_id = $1", calls[3][0].call_id
    )  # the outbound call of two days ago is still open

    # A CRM slower than its deadline is skipped quickly; the call still gets its route.
    routing.crm.delay = 2.0
    try:
        started = asyncio.get_running_loop().time()
        late = await plan(crm_only)
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        routing.crm.delay = 0.0
    assert [t.extension.extension for t in late.verbs[0].dial.targets] == ["101"]
