"""`Provisioning` over a real grpc.aio server and the config outbox relayed to real Kafka."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaConsumer
from callmesh.events.v1 import config_pb2
from callmesh.provisioning.v1 import provisioning_pb2 as pb
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh_api.config_events import CONFIG_TOPIC, ConfigOutboxRelay
from callmesh_api.provisioning import ProvisioningServicer
from callmesh_api.store import ConfigStore
from callmesh_core.grpc_server import GrpcServer
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from opentelemetry import trace

LOG = EventLogger(logging.getLogger("callmesh.test.api"))


@pytest.fixture(scope="module")
async def stub(api_pool: asyncpg.Pool) -> AsyncIterator[provisioning_pb2_grpc.ProvisioningStub]:
    server = GrpcServer(host="127.0.0.1", port=0, tracer=trace.get_tracer("t"), log=LOG)
    server.add(
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server,
        ProvisioningServicer(ConfigStore(api_pool)),
        "callmesh.provisioning.v1.Provisioning",
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield provisioning_pb2_grpc.ProvisioningStub(channel)
    await server.stop(0)


def ha1(user: str, realm: str, password: str) -> tuple[str, str]:
    material = f"{user}:{realm}:{password}".encode()
    return hashlib.md5(material).hexdigest(), hashlib.sha256(material).hexdigest()


async def test_upserts_are_idempotent_and_versioned(
    stub: provisioning_pb2_grpc.ProvisioningStub,
) -> None:
    slug = f"op-{uuid.uuid4().hex[:8]}"
    tenant = pb.Tenant(
        slug=slug, name="Operator Co", timezone="Europe/Moscow", default_region="RU", enabled=True
    )
    first = await stub.UpsertTenant(pb.UpsertTenantRequest(tenant=tenant))
    tenant_id = first.tenant.tenant_id
    again = await stub.UpsertTenant(pb.UpsertTenantRequest(tenant=tenant))
    assert first.changed and not again.changed
    assert again.tenant.version == first.tenant.version == 1
    assert first.tenant.sip_domain == f"{slug}.callmesh.local"
    tenant.name = "Operator Company"
    changed = await stub.UpsertTenant(pb.UpsertTenantRequest(tenant=tenant))
    assert changed.changed and changed.tenant.version == 2
    assert changed.tenant.tenant_id == tenant_id

    md5, sha = ha1("101", first.tenant.sip_domain, "secret")
    # No user_id: the extension is the natural key, so repeating the upsert is harmless.
    user = pb.User(
        tenant_id=tenant_id,
        extension="101",
        name="Anna",
        sip_credentials=pb.DigestCredentials(ha1_md5=md5, ha1_sha256=sha),
        permission_class=pb.PERMISSION_CLASS_LOCAL,
        enabled=True,
    )
    created = await stub.UpsertUser(pb.UpsertUserRequest(user=user))
    repeated = await stub.UpsertUser(pb.UpsertUserRequest(user=user))
    assert created.changed and not repeated.changed
    assert created.user.user_id == repeated.user.user_id
    found = await stub.GetUserByExtension(
        pb.GetUserByExtensionRequest(tenant_id=tenant_id, extension="101")
    )
    assert found.sip_credentials.ha1_sha256 == sha
    assert found.sip_credentials.realm == first.tenant.sip_domain
    assert found.permission_class == pb.PERMISSION_CLASS_LOCAL

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpsertUser(pb.UpsertUserRequest(user=user, expected_version=7))
    assert stale.value.code() == grpc.StatusCode.ABORTED

    e164 = f"+7812{uuid.uuid4().int % 10**7:07d}"
    stored = await stub.UpsertNumber(
        pb.UpsertNumberRequest(number=pb.Number(tenant_id=tenant_id, e164=e164, enabled=True))
    )
    assert stored.number.e164 == e164
    looked_up = await stub.GetNumber(pb.GetNumberRequest(e164=e164))
    assert looked_up.tenant_id == tenant_id

    # A unique /28 per run, so trunks written by other tests stay out of the way.
    base = (uuid.uuid4().int % 15) * 16
    trunk = pb.Trunk(
        tenant_id=tenant_id,
        name=f"carrier-{slug}",
        host="sip.carrier.example",
        port=5070,
        channel_limit=60,
        enabled=True,
        ip=pb.IpAuth(source_cidrs=["192.0.2.0/24", f"198.51.100.{base}/28"]),
    )
    await stub.UpsertTrunk(pb.UpsertTrunkRequest(trunk=trunk))
    inside = f"198.51.100.{base + 5}"
    by_source = await stub.GetTrunkBySource(pb.GetTrunkBySourceRequest(address=inside))
    assert by_source.name == f"carrier-{slug}" and by_source.port == 5070
    by_name = await stub.GetTrunk(pb.GetTrunkRequest(tenant_id=tenant_id, name=trunk.name))
    assert by_name.trunk_id == by_source.trunk_id
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await stub.GetTrunkBySource(pb.GetTrunkBySourceRequest(address="203.0.113.77"))
    assert none.value.code() == grpc.StatusCode.NOT_FOUND

    user_id = created.user.user_id
    deleted = await stub.DeleteUser(pb.DeleteRequest(tenant_id=tenant_id, id=user_id))
    gone = await stub.DeleteUser(pb.DeleteRequest(tenant_id=tenant_id, id=user_id))
    assert deleted.existed and not gone.existed


async def test_bad_input_is_invalid_argument_with_the_reason(
    stub: provisioning_pb2_grpc.ProvisioningStub,
) -> None:
    cases = [
        (stub.UpsertTenant, pb.UpsertTenantRequest(tenant=pb.Tenant(slug="Bad Slug!")), "slug"),
        (
            stub.UpsertTenant,
            pb.UpsertTenantRequest(tenant=pb.Tenant(slug="tz-bad", timezone="Mars/Base")),
            "Mars/Base",
        ),
        (stub.GetTenant, pb.GetTenantRequest(tenant_id="not-a-uuid"), "not an id"),
        (stub.GetTrunkBySource, pb.GetTrunkBySourceRequest(address="not-an-ip"), "IP address"),
        (stub.GetNumber, pb.GetNumberRequest(e164="12"), "international"),
    ]
    for method, request, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await method(request)  # type: ignore[operator]
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert reason in (error.value.details() or ""), error.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetTenant(pb.GetTenantRequest(slug="no-such-tenant"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_changes_reach_kafka_in_order_through_the_outbox(
    stub: provisioning_pb2_grpc.ProvisioningStub, api_pool: asyncpg.Pool, kafka_bootstrap: str
) -> None:
    slug = f"ev-{uuid.uuid4().hex[:8]}"
    reply = await stub.UpsertTenant(pb.UpsertTenantRequest(tenant=pb.Tenant(slug=slug, name="E")))
    tenant_id = reply.tenant.tenant_id
    md5, sha = ha1("201", f"{slug}.callmesh.local", "pw")
    user = pb.User(
        tenant_id=tenant_id,
        extension="201",
        sip_credentials=pb.DigestCredentials(ha1_md5=md5, ha1_sha256=sha),
    )
    created = await stub.UpsertUser(pb.UpsertUserRequest(user=user))
    user.name = "Renamed"
    await stub.UpsertUser(pb.UpsertUserRequest(user=user))
    await stub.DeleteUser(pb.DeleteRequest(tenant_id=tenant_id, id=created.user.user_id))

    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=trace.get_tracer("t"))
    await producer.start()
    relay = ConfigOutboxRelay(api_pool, producer, LOG)
    try:
        sent = await relay.publish_pending()
        assert sent >= 4
        assert await api_pool.fetchval("SELECT count(*) FROM config_outbox") == 0
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        CONFIG_TOPIC,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-{slug}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    mine: list[config_pb2.ConfigChanged] = []
    try:
        while len(mine) < 4:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "config events did not arrive"
            for records in batch.values():
                for record in records:
                    event = config_pb2.ConfigChanged.FromString(record.value)
                    if event.tenant_id == tenant_id:
                        assert record.key == tenant_id.encode()
                        mine.append(event)
    finally:
        await consumer.stop()
    assert [(e.kind, e.version, e.deleted) for e in mine] == [
        (config_pb2.CONFIG_KIND_TENANT, 1, False),
        (config_pb2.CONFIG_KIND_USER, 1, False),
        (config_pb2.CONFIG_KIND_USER, 2, False),
        (config_pb2.CONFIG_KIND_USER, 3, True),
    ]
    assert {e.id for e in mine[1:]} == {created.user.user_id}
    assert len({e.event_id for e in mine}) == 4 and all(e.changed_by for e in mine)
