"""The routing service's parts assembled as app.py assembles them, on free ports, for tests.

Everything is real (grpc.aio servers, PostgreSQL schema, Kafka topics, the core's gRPC server
with its interceptors) except the api's side of `Provisioning.GetRoutingConfig`, which has not
landed yet: `ProvisioningTestDouble` serves documents a test hands it, over real gRPC. It is a
test double of an internal contract, nothing more. `CrmTestDouble` does the same for crm-sync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from callmesh.common.v1 import common_pb2
from callmesh.crm.v1 import crm_pb2, crm_pb2_grpc
from callmesh.provisioning.v1 import provisioning_pb2, provisioning_pb2_grpc
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_core.db import create_pool, migrate
from callmesh_core.grpc_server import GrpcServer, create_channel
from callmesh_core.logging import EventLogger
from callmesh_routing.icm_sources import ContactHistory, CrmResponsible, IcmPrefetch
from callmesh_routing.servicer import RoutingServicer
from callmesh_routing.tenants import CacheMetrics, ProvisioningDocuments, TenantConfigs
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry

DATA = Path(__file__).resolve().parent / "data"
MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "callmesh_routing" / "migrations"
MAIN_DID = "+78123090000"
ICM_DID = "+78123090001"
# Monday 23 November 2026, 10:00 in Moscow: office hours.
OFFICE_HOURS = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
# The same Monday, 21:00 in Moscow.
AFTER_HOURS = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def example_document() -> dict[str, Any]:
    """The example routing document (tests/data/routing_document.json), fresh each time."""
    loaded: dict[str, Any] = json.loads((DATA / "routing_document.json").read_text())
    return loaded


class ProvisioningTestDouble(provisioning_pb2_grpc.ProvisioningServicer):
    """Serves `GetRoutingConfig` from documents held in memory (test double, see above)."""

    def __init__(self) -> None:
        self.documents: dict[str, tuple[dict[str, Any], int]] = {}
        self.hanging: set[str] = set()  # tenants whose requests are never answered
        self.fetches: dict[str, int] = {}
        # When set, answers wait for it, with the document as it was when the request came.
        self.gate: asyncio.Event | None = None
        self.arrived = asyncio.Event()  # set when a request waits at the gate

    def put(self, tenant_id: str, document: dict[str, Any], version: int) -> None:
        self.documents[tenant_id] = (document, version)

    async def GetRoutingConfig(
        self, request: provisioning_pb2.GetRoutingConfigRequest, context: Any
    ) -> provisioning_pb2.RoutingConfig:
        tenant = request.tenant_id
        self.fetches[tenant] = self.fetches.get(tenant, 0) + 1
        if tenant in self.hanging:
            await asyncio.sleep(3600)
        if tenant not in self.documents:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no routing configuration")
        document, version = self.documents[tenant]
        if self.gate is not None:
            self.arrived.set()
            await self.gate.wait()
        reply = provisioning_pb2.RoutingConfig(
            tenant_id=tenant, document_json=json.dumps(document), version=version
        )
        reply.updated_at.FromDatetime(OFFICE_HOURS)
        return reply


class CrmTestDouble(crm_pb2_grpc.CrmServicer):
    """Answers `LookupResponsible` from a table (test double of crm-sync)."""

    def __init__(self) -> None:
        self.responsible: dict[str, str] = {}  # caller E.164 -> extension
        self.delay = 0.0

    async def LookupResponsible(
        self, request: crm_pb2.LookupResponsibleRequest, context: Any
    ) -> crm_pb2.LookupResponsibleReply:
        if self.delay:
            await asyncio.sleep(self.delay)
        extension = self.responsible.get(request.caller_number)
        if extension is None:
            return crm_pb2.LookupResponsibleReply(source="amocrm")
        return crm_pb2.LookupResponsibleReply(
            responsible=crm_pb2.Responsible(extension=extension, name="Manager"),
            source="amocrm",
        )


@dataclass
class Clock:
    now: datetime = OFFICE_HOURS

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Routing:
    """A running routing servicer and a client for it."""

    stub: routing_pb2_grpc.RoutingStub
    provisioning: ProvisioningTestDouble
    crm: CrmTestDouble
    tenants: TenantConfigs
    history: ContactHistory
    pool: asyncpg.Pool
    clock: Clock
    spans: InMemorySpanExporter
    tracer: Tracer
    log: EventLogger
    metrics: CollectorRegistry
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def new_tenant(self, document: dict[str, Any] | None = None, version: int = 1) -> str:
        tenant_id = str(uuid.uuid4())
        self.provisioning.put(tenant_id, document or example_document(), version)
        return tenant_id


async def _serve(
    register: Callable[[Any, grpc.aio.Server], None], servicer: Any
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    register(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@asynccontextmanager
async def running_routing(
    postgres_dsn: str, *, config_wait_seconds: float = 1.0, with_crm: bool = False
) -> AsyncIterator[Routing]:
    log = EventLogger(logging.getLogger("callmesh.routing.test"))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("routing-test")

    provisioning = ProvisioningTestDouble()
    provisioning_server, provisioning_port = await _serve(
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server, provisioning
    )
    crm = CrmTestDouble()
    crm_server, crm_port = await _serve(crm_pb2_grpc.add_CrmServicer_to_server, crm)

    schema = f"routing_test_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=4)

    provisioning_channel = create_channel(
        f"127.0.0.1:{provisioning_port}", tracer=tracer, default_timeout=5.0
    )
    crm_channel = create_channel(f"127.0.0.1:{crm_port}", tracer=tracer, default_timeout=1.0)
    metrics = CollectorRegistry()
    tenants = TenantConfigs(
        ProvisioningDocuments(provisioning_channel, 5.0),
        log,
        retry_after_failure_seconds=0.5,
        metrics=CacheMetrics(metrics),
    )
    history = ContactHistory(pool, 0.5)
    icm = IcmPrefetch(history, CrmResponsible(crm_channel, 0.2) if with_crm else None, log)
    clock = Clock()
    server = GrpcServer(host="127.0.0.1", port=0, tracer=tracer, log=log)
    server.add(
        routing_pb2_grpc.add_RoutingServicer_to_server,
        RoutingServicer(tenants, icm, log, config_wait_seconds=config_wait_seconds, clock=clock),
        "callmesh.routing.v1.Routing",
    )
    port = await server.start()
    client = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    routing = Routing(
        routing_pb2_grpc.RoutingStub(client),
        provisioning,
        crm,
        tenants,
        history,
        pool,
        clock,
        spans,
        tracer,
        log,
        metrics,
    )
    try:
        yield routing
    finally:
        for close in reversed(routing.closers):
            await close()
        await client.close()
        await server.stop(0)
        await provisioning_channel.close()
        await crm_channel.close()
        await provisioning_server.stop(0)
        await crm_server.stop(0)
        await pool.close()
        connection = await asyncpg.connect(postgres_dsn)
        try:
            await connection.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await connection.close()


def inbound_call(
    tenant_id: str, caller: str, did: str = MAIN_DID, call_id: str | None = None
) -> routing_pb2.CallContext:
    return routing_pb2.CallContext(
        call_id=call_id or str(uuid.uuid4()),
        tenant_id=tenant_id,
        direction=common_pb2.CALL_DIRECTION_INBOUND,
        caller_number=caller,
        callee_number=did,
        did=did,
        trunk_id="rostelecom",
    )


def kinds(reply: routing_pb2.PlanReply) -> list[str]:
    return [verb.WhichOneof("kind") or "" for verb in reply.verbs]
