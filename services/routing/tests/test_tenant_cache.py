"""The tenant configuration cache around changes: mid-load changes, slow refreshes, deletions.

The cache is driven directly (the Kafka path to it is in test_service_events.py) against the
Provisioning test double over real gRPC, whose answers a test can hold back with a gate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from callmesh.routing.v1 import routing_pb2 as pb

from .harness import Routing, example_document, inbound_call, running_routing

CALLER = "+74951112233"


@pytest.fixture(scope="module")
async def routing(postgres_dsn: str) -> AsyncIterator[Routing]:
    async with running_routing(postgres_dsn, config_wait_seconds=2.0) as running:
        yield running


def greeting(version: int) -> dict[str, object]:
    document = example_document()
    document["scenarios"][0]["steps"]["welcome"]["prompt"] = f"welcome-v{version}"
    document["directory"]["prompts"].append(f"welcome-v{version}")
    return document


async def plan(routing: Routing, tenant: str) -> pb.PlanReply:
    reply: pb.PlanReply = await routing.stub.Plan(
        pb.PlanRequest(call=inbound_call(tenant, CALLER)), timeout=5
    )
    return reply


async def test_a_change_during_the_first_load_is_not_lost(routing: Routing) -> None:
    tenant = routing.new_tenant(greeting(1), version=1)
    routing.provisioning.gate = gate = asyncio.Event()
    routing.provisioning.arrived.clear()
    try:
        first = asyncio.ensure_future(plan(routing, tenant))
        await routing.provisioning.arrived.wait()  # version 1 is read, its answer held
        # The api saves version 2 while version 1 is on its way to us.
        routing.provisioning.put(tenant, greeting(2), 2)
        assert routing.tenants.invalidate(tenant, 2)
        gate.set()
        reply = await first
    finally:
        routing.provisioning.gate = None
    assert reply.scenario_version == 2
    assert reply.verbs[1].play.items[0].prompt == "welcome-v2"
    assert routing.provisioning.fetches[tenant] == 2


async def test_calls_during_a_slow_refresh_get_the_previous_version_at_once(
    routing: Routing,
) -> None:
    tenant = routing.new_tenant(greeting(1), version=1)
    assert (await plan(routing, tenant)).scenario_version == 1
    routing.provisioning.put(tenant, greeting(2), 2)
    routing.provisioning.gate = gate = asyncio.Event()
    try:
        assert routing.tenants.invalidate(tenant, 2)
        started = time.perf_counter()
        during = await plan(routing, tenant)
        assert time.perf_counter() - started < 0.5  # not the 2 s configuration wait
        assert during.scenario_version == 1
        gate.set()
        await asyncio.sleep(0.05)
    finally:
        routing.provisioning.gate = None
    after = await plan(routing, tenant)
    assert (after.scenario_version, after.verbs[1].play.items[0].prompt) == (2, "welcome-v2")
    # An event for a version already held changes nothing.
    assert not routing.tenants.invalidate(tenant, 2)
    assert routing.provisioning.fetches[tenant] == 2


async def test_a_failed_refresh_keeps_serving_the_previous_version(routing: Routing) -> None:
    tenant = routing.new_tenant(greeting(1), version=1)
    await plan(routing, tenant)
    broken = greeting(2)
    broken["default_scenario"] = "gone"  # unusable: the refresh fails
    routing.provisioning.put(tenant, broken, 2)
    failed_before = failed_loads(routing)
    routing.tenants.invalidate(tenant, 2)
    await asyncio.sleep(0.1)
    reply = await plan(routing, tenant)
    assert (reply.scenario_version, reply.verbs[1].play.items[0].prompt) == (1, "welcome-v1")
    assert failed_loads(routing) == failed_before + 1


def failed_loads(routing: Routing) -> float:
    value = routing.metrics.get_sample_value(
        "callmesh_routing_config_loads_total", {"outcome": "failed"}
    )
    return value or 0.0


async def test_a_deleted_tenant_is_forgotten(routing: Routing) -> None:
    tenant = routing.new_tenant()
    await plan(routing, tenant)
    del routing.provisioning.documents[tenant]
    assert routing.tenants.forget(tenant)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await plan(routing, tenant)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert not routing.tenants.forget("never-seen")
