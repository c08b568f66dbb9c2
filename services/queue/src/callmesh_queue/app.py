"""Wiring of the queue service: the one place that builds its adapters and passes them in.

- PostgreSQL schema `queue` (migrations in `migrations/`): definitions, leases, snapshots,
  journal, the event outbox (`store.QueueStore`);
- the runtime that owns tenants' queues under a lease and drives their engines
  (`runtime.QueueRuntime`);
- the `Queue` gRPC service (`servicer.QueueServicer`);
- the outbox relay publishing queue events to `callmesh.calls.v1` (`events`).
"""

from __future__ import annotations

from callmesh.queue.v1 import queue_pb2_grpc
from callmesh_core.service import ServiceContext, run_service

from callmesh_queue.config import QueueSettings
from callmesh_queue.events import CallEventOutboxRelay
from callmesh_queue.runtime import QueueRuntime
from callmesh_queue.servicer import QueueServicer
from callmesh_queue.store import QueueStore


async def build(ctx: ServiceContext[QueueSettings]) -> None:
    settings = ctx.settings
    pool = await ctx.postgres(schema=settings.queue_db_schema, migrations="callmesh_queue")
    store = QueueStore(pool)

    producer = await ctx.kafka_producer()
    relay = CallEventOutboxRelay(pool, producer, ctx.log.child("event_relay"))
    await relay.start()
    ctx.on_close(relay.stop)  # close hooks run in reverse: relay, then producer and pool

    runtime = QueueRuntime(
        store,
        replica_id=settings.replica_id,
        address=settings.queue_advertise_address or f"{settings.grpc_host}:{settings.grpc_port}",
        log=ctx.log.child("runtime"),
        lease_seconds=settings.queue_lease_seconds,
        rejoin_grace_seconds=settings.queue_rejoin_grace_seconds,
        snapshot_every=settings.queue_snapshot_every,
    )
    ctx.grpc.add(
        queue_pb2_grpc.add_QueueServicer_to_server,
        QueueServicer(runtime, ctx.log.child("grpc")),
        "callmesh.queue.v1.Queue",
    )
    await runtime.start()
    # Draining hands the queues over: the leases are released at once, callers' streams end
    # with UNAVAILABLE and the edge re-joins them on the replica that takes over.
    ctx.on_drain(runtime.stop)


def main() -> None:
    run_service(QueueSettings, build)
