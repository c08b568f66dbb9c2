"""Wiring of the api service: the one place that builds its adapters and passes them in.

- PostgreSQL schema `api` (migrations in `migrations/`), the configuration store and use cases;
- the REST API and its OpenAPI document on `CALLMESH_API_HTTP_PORT` (default 8080);
- the `Provisioning` gRPC service on the service's gRPC port;
- the outbox relay that publishes `callmesh.config.v1`;
- the CDR consumer of `callmesh.calls.v1` (group `api-cdr`, poison records to its `.dlq`).
"""

from __future__ import annotations

from aiohttp import web
from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh.provisioning.v1 import provisioning_pb2_grpc
from callmesh_core.service import ServiceContext, run_service

from callmesh_api.cdr import CdrIngest
from callmesh_api.config import ApiSettings
from callmesh_api.config_events import ConfigOutboxRelay
from callmesh_api.config_service import ConfigService
from callmesh_api.provisioning import ProvisioningServicer
from callmesh_api.rest import build_rest_app
from callmesh_api.routing_validation import RoutingGrpcValidator
from callmesh_api.store import ConfigStore

SCHEMA = "api"


async def build(ctx: ServiceContext[ApiSettings]) -> None:
    settings = ctx.settings
    pool = await ctx.postgres(schema=SCHEMA, migrations="callmesh_api")
    store = ConfigStore(pool)
    # Routing validates routing documents before they are stored (it owns their meaning).
    validator = RoutingGrpcValidator(ctx.channel(settings.api_routing_address))
    service = ConfigService(store, routing_validator=validator)
    if settings.api_bootstrap_token:
        await service.ensure_platform_token(settings.api_bootstrap_token)

    ctx.grpc.add(
        provisioning_pb2_grpc.add_ProvisioningServicer_to_server,
        ProvisioningServicer(store),
        "callmesh.provisioning.v1.Provisioning",
    )

    producer = await ctx.kafka_producer()
    relay = ConfigOutboxRelay(pool, producer, ctx.log.child("config_relay"))
    await relay.start()
    ctx.on_close(relay.stop)  # close hooks run in reverse: relay, then producer and pool

    ingest = CdrIngest(pool)
    await ctx.kafka_consumer(
        group_id="api-cdr",
        topics=["callmesh.calls.v1"],
        message_type=CallEvent,
        handler=ingest.handle,
        # A fetched batch in one transaction; a refused batch falls back to `handle` per record.
        batch_handler=ingest.handle_batch,
        dlq_producer=producer,
    )

    runner = web.AppRunner(build_rest_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_http_host, settings.api_http_port)
    await site.start()
    ctx.log.info("rest_listening", host=settings.api_http_host, port=settings.api_http_port)
    ctx.on_close(runner.cleanup)


def main() -> None:
    run_service(ApiSettings, build)
