"""Wiring of the routing service: the one place that builds its adapters and passes them in.

- the `Routing` gRPC servicer (Plan/Continue/ValidateConfig) on the service's gRPC port;
- tenants' routing documents from the api's `Provisioning.GetRoutingConfig`
  (`CALLMESH_ROUTING_PROVISIONING_ADDRESS`), cached per tenant and refreshed on
  `callmesh.config.v1` (a consumer group per replica: every replica keeps its own cache);
- PostgreSQL schema `routing` (migrations in `migrations/`) with the ICM contact history, fed
  by a consumer of `callmesh.calls.v1` (group `routing-icm`, poison records to its `.dlq`);
- the CRM as a second ICM source when `CALLMESH_ROUTING_CRM_ADDRESS` is set.
"""

from __future__ import annotations

from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh.events.v1.config_pb2 import ConfigChanged
from callmesh.routing.v1 import routing_pb2_grpc
from callmesh_core.grpc_server import create_channel
from callmesh_core.service import ServiceContext, metric_prefix, run_service

from callmesh_routing.config import RoutingSettings
from callmesh_routing.icm_sources import ContactHistory, CrmResponsible, IcmPrefetch
from callmesh_routing.servicer import RoutingServicer
from callmesh_routing.tenants import CacheMetrics, ProvisioningDocuments, TenantConfigs

SCHEMA = "routing"
CALLS_TOPIC = "callmesh.calls.v1"
CONFIG_TOPIC = "callmesh.config.v1"
ICM_GROUP = "routing-icm"


async def build(ctx: ServiceContext[RoutingSettings]) -> None:
    settings = ctx.settings
    pool = await ctx.postgres(schema=SCHEMA, migrations="callmesh_routing")

    # Not `ctx.channel`: documents with big rate tables exceed gRPC's 4 MiB default, so this
    # channel accepts larger replies.
    max_bytes = settings.routing_config_max_message_mb * 1024 * 1024
    provisioning = create_channel(
        settings.routing_provisioning_address,
        tracer=ctx.tracer,
        default_timeout=settings.grpc_client_timeout_seconds,
        options=[("grpc.max_receive_message_length", max_bytes)],
    )

    async def close_provisioning() -> None:
        await provisioning.close()

    ctx.on_close(close_provisioning)
    tenants = TenantConfigs(
        ProvisioningDocuments(provisioning, settings.routing_config_fetch_timeout_seconds),
        ctx.log.child("tenants"),
        retry_after_failure_seconds=settings.routing_config_retry_seconds,
        metrics=CacheMetrics(ctx.metrics, metric_prefix(settings.service_name)),
    )

    history = ContactHistory(pool, settings.routing_icm_history_timeout_seconds)
    crm = None
    if settings.routing_crm_address:
        crm = CrmResponsible(
            ctx.channel(settings.routing_crm_address), settings.routing_crm_timeout_seconds
        )
    icm = IcmPrefetch(history, crm, ctx.log.child("icm"))

    ctx.grpc.add(
        routing_pb2_grpc.add_RoutingServicer_to_server,
        RoutingServicer(
            tenants,
            icm,
            ctx.log.child("decisions"),
            config_wait_seconds=settings.routing_config_wait_seconds,
        ),
        "callmesh.routing.v1.Routing",
    )

    producer = await ctx.kafka_producer()  # for the consumers' dead letters
    await ctx.kafka_consumer(
        group_id=ICM_GROUP,
        topics=[CALLS_TOPIC],
        message_type=CallEvent,
        handler=history.handle,
        dlq_producer=producer,
    )
    await ctx.kafka_consumer(
        # Every replica caches every tenant it serves, so each needs every change: a group
        # of its own rather than a share of the partitions.
        group_id=f"routing-config-{settings.replica_id}",
        topics=[CONFIG_TOPIC],
        message_type=ConfigChanged,
        handler=tenants.on_config_changed,
        dlq_producer=producer,
    )
    ctx.log.info(
        "routing_wired",
        provisioning=settings.routing_provisioning_address,
        crm=settings.routing_crm_address or "off",
    )


def main() -> None:
    run_service(RoutingSettings, build)
