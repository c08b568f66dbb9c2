"""Wiring of the sip-edge service: the one place that builds its adapters and passes them in.

- PostgreSQL schema `sip_edge` (migrations in `migrations/`): the location store and the
  presence outbox, relayed to `callmesh.presence.v1`;
- a `Provisioning` client (the directory), its cache dropped by `callmesh.config.v1` events
  (consumer group `sip-edge-<replica>`: every replica must see every change);
- the SIP endpoint (UDP and TCP on `CALLMESH_SIP_HOST`:`CALLMESH_SIP_PORT`), its transaction
  layer and the transaction user (`SipEdge`: OPTIONS, registrar, calls);
- the B2BUA (`calls.manager.CallManager`): call sessions asking `Routing` (at
  `CALLMESH_SIP_EDGE_ROUTING_ADDRESS`) for verbs; call events through the `call_outbox` to
  `callmesh.calls.v1`;
- on SIGTERM registrations keep working; new INVITEs get 503 with Retry-After; the drain hook
  returns once every call of the replica has ended (or the grace period cuts it short).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass

import asyncpg
from callmesh.events.v1 import config_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxRelay
from callmesh_core.service import ServiceContext, run_service
from grpc.aio import Channel

from callmesh_sip_edge.abuse import AbuseGuard, AbuseSettings, RateLimit
from callmesh_sip_edge.calls.events import (
    CALLS_NOTIFY_CHANNEL,
    CALLS_RELAY_LOCK,
    CallEventWriter,
    call_outbox_event,
)
from callmesh_sip_edge.calls.manager import CallManager, Trunks
from callmesh_sip_edge.calls.media import MediaAnchor
from callmesh_sip_edge.calls.session import RoutingClient
from callmesh_sip_edge.config import SipEdgeSettings
from callmesh_sip_edge.directory import Directory
from callmesh_sip_edge.edge import RegistrarService, SipEdge
from callmesh_sip_edge.location import (
    PRESENCE_NOTIFY_CHANNEL,
    PRESENCE_RELAY_LOCK,
    LocationStore,
    presence_outbox_event,
)
from callmesh_sip_edge.registrar import ExpiryPolicy
from callmesh_sip_edge.sip.digest import DigestAlgorithm
from callmesh_sip_edge.sip.transaction import TimerSettings, TransactionLayer
from callmesh_sip_edge.transport import SipEndpoint

SCHEMA = "sip_edge"
CONFIG_TOPIC = "callmesh.config.v1"


def abuse_settings(settings: SipEdgeSettings) -> AbuseSettings:
    return AbuseSettings(
        register_rate=RateLimit(settings.register_rate_per_second, settings.register_burst),
        invite_rate=RateLimit(settings.invite_rate_per_second, settings.invite_burst),
        window=settings.auth_failure_window_seconds,
        source_failures=settings.auth_source_ban_failures,
        ban_seconds=settings.auth_source_ban_seconds,
        account_failures=settings.auth_account_lockout_failures,
        lockout_seconds=settings.auth_account_lockout_seconds,
    )


@dataclass
class EdgeRuntime:
    """Everything `start_edge` started; `stop` undoes it in reverse order."""

    endpoint: SipEndpoint
    edge: SipEdge
    registrar: RegistrarService
    directory: Directory
    location: LocationStore
    relay: OutboxRelay
    sweeper: asyncio.Task[None]
    calls: CallManager
    call_events: CallEventWriter
    call_relay: OutboxRelay

    @property
    def port(self) -> int:
        return self.endpoint.port

    async def stop(self) -> None:
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await self.endpoint.stop()
        await self.edge.wait_idle()
        if self.calls.media is not None:
            await self.calls.media.stop()
        await self.call_events.stop()
        await self.call_relay.stop()
        await self.relay.stop()
        await self.location.stop()


async def _sweep_forever(location: LocationStore, interval: float, log: EventLogger) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            while await location.sweep_expired() > 0:
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("location_sweep_failed", error=f"{type(exc).__name__}: {exc}")


async def start_edge(
    settings: SipEdgeSettings,
    *,
    pool: asyncpg.Pool,
    producer: EventProducer,
    provisioning: Channel,
    routing: Channel,
    log: EventLogger,
    media: Channel | None = None,
    sip_port: int | None = None,
    timers: TimerSettings | None = None,
) -> EdgeRuntime:
    """Build and start the SIP side on an open pool, producer and Provisioning channel."""
    directory = Directory(
        provisioning,
        timeout=settings.grpc_client_timeout_seconds,
        ttl=settings.sip_edge_directory_ttl_seconds,
    )
    location = LocationStore(pool, replica=settings.replica_id, log=log.child("location"))
    await location.start()
    relay = OutboxRelay(
        pool,
        producer,
        log.child("presence_relay"),
        table="presence_outbox",
        to_event=presence_outbox_event,
        lock_key=PRESENCE_RELAY_LOCK,
        notify_channel=PRESENCE_NOTIFY_CHANNEL,
    )
    await relay.start()
    if settings.sip_edge_nonce_secret is not None:
        secret = settings.sip_edge_nonce_secret.encode()
    else:
        # A retried REGISTER must reach a replica that knows the key of its nonce.
        log.warning("nonce_secret_random", hint="set CALLMESH_SIP_EDGE_NONCE_SECRET for replicas")
        secret = secrets.token_bytes(32)
    abuse = AbuseGuard(abuse_settings(settings))
    endpoint = SipEndpoint(TransactionLayer(timers), log=log.child("sip"))
    registrar = RegistrarService(
        endpoint=endpoint,
        directory=directory,
        location=location,
        abuse=abuse,
        nonce_secret=secret,
        policy=ExpiryPolicy(
            default=settings.registration_default_expires,
            minimum=settings.registration_min_expires,
            maximum=settings.registration_max_expires,
            max_contacts=settings.registration_max_contacts,
        ),
        log=log.child("registrar"),
        wall_clock=time.time,
        algorithms=tuple(
            DigestAlgorithm(name) for name in settings.sip_edge_digest_algorithms.split(",")
        ),
    )
    edge = SipEdge(
        endpoint=endpoint, registrar=registrar, abuse=abuse, log=log, wall_clock=time.time
    )
    call_relay = OutboxRelay(
        pool,
        producer,
        log.child("call_relay"),
        table="call_outbox",
        to_event=call_outbox_event,
        lock_key=CALLS_RELAY_LOCK,
        notify_channel=CALLS_NOTIFY_CHANNEL,
    )
    await call_relay.start()
    call_events = CallEventWriter(pool, log.child("call_events"), wake_relay=call_relay.wake)
    # Without a MediaControl channel the SDP passes through unchanged (TEMPORARY: only tests
    # of the signalling alone run without media).
    anchor: MediaAnchor | None = None
    if media is not None:
        anchor = MediaAnchor(
            media, owner=settings.replica_id, timeout=settings.grpc_client_timeout_seconds
        )
        anchor.start()
    call_events.start()
    calls = CallManager(
        endpoint=endpoint,
        registrar=registrar,
        directory=directory,
        location=location,
        abuse=abuse,
        routing=RoutingClient(routing, timeout=settings.sip_edge_routing_timeout_seconds),
        trunks=Trunks(provisioning, timeout=settings.grpc_client_timeout_seconds),
        events=call_events,
        log=log.child("calls"),
        media=anchor,
        replica=settings.replica_id,
        advertised_host=settings.sip_advertised_host,
        wall_clock=time.time,
    )
    edge.call_handler = calls
    await endpoint.start(settings.sip_host, settings.sip_port if sip_port is None else sip_port)
    sweeper = asyncio.create_task(
        _sweep_forever(location, settings.registration_sweep_seconds, log), name="location-sweep"
    )
    return EdgeRuntime(
        endpoint,
        edge,
        registrar,
        directory,
        location,
        relay,
        sweeper,
        calls,
        call_events,
        call_relay,
    )


async def build(ctx: ServiceContext[SipEdgeSettings]) -> None:
    settings = ctx.settings
    pool = await ctx.postgres(schema=SCHEMA, migrations="callmesh_sip_edge")
    producer = await ctx.kafka_producer()
    runtime = await start_edge(
        settings,
        pool=pool,
        producer=producer,
        provisioning=ctx.channel(settings.sip_edge_provisioning_address),
        routing=ctx.channel(settings.sip_edge_routing_address),
        media=ctx.channel(settings.media_target),
        log=ctx.log,
    )
    ctx.on_close(runtime.stop)  # close hooks run in reverse: SIP side before pool/producer
    await ctx.kafka_consumer(
        # Every replica keeps its own cache, so every replica reads every change.
        group_id=f"sip-edge-directory-{settings.replica_id}",
        topics=[CONFIG_TOPIC],
        message_type=config_pb2.ConfigChanged,
        handler=runtime.directory.handle_config_event,
        dlq_producer=producer,
    )

    async def drain() -> None:
        await drain_calls(runtime, ctx.log)

    ctx.on_drain(drain)


async def drain_calls(runtime: EdgeRuntime, log: EventLogger) -> None:
    """The drain hook: returns once the replica holds no call (the core bounds the wait).

    Registrations keep working while draining; new INVITEs are refused (503 with Retry-After)
    and calls in progress go on until they end.
    """
    runtime.edge.draining = True
    runtime.calls.draining = True
    log.info("drain_waiting_for_calls", active_calls=runtime.calls.active_calls)
    await runtime.calls.wait_calls_ended()
    log.info("drain_calls_done")


def main() -> None:
    run_service(SipEdgeSettings, build)
