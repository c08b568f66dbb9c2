"""The service runner: start-up, readiness, signal-driven drain, orderly shutdown.

Every service's `app.main()` calls `run_service(SettingsType, build)`. The runner

1. loads settings (a bad variable: one stderr line, exit 2),
2. configures logging and telemetry,
3. creates the gRPC server (health, reflection, tracing, error mapping) and the HTTP side port,
4. awaits the service's `build(ctx)`, which registers servicers, readiness checks and
   drain/close hooks on the `ServiceContext`,
5. starts serving, marks the replica ready and logs one `ready` line,
6. on SIGTERM/SIGINT drains: readiness and gRPC health go false, the drain hooks get up to
   `CALLMESH_DRAIN_GRACE_SECONDS` (a second signal cuts that short), the gRPC server stops with
   `CALLMESH_GRPC_STOP_GRACE_SECONDS`, close hooks run in reverse order, and the process exits 0.

Everything runs on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import uvloop
from grpc.aio import Channel
from opentelemetry import metrics, trace
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from callmesh_core.config import ServiceSettings, load_settings_or_exit
from callmesh_core.grpc_server import GrpcServer, create_channel
from callmesh_core.http import HealthHttpServer, Readiness, ReadinessCheck
from callmesh_core.logging import EventLogger, configure_logging
from callmesh_core.telemetry import Telemetry

if TYPE_CHECKING:
    # Imported lazily at run time: aiokafka and asyncpg cost ~0.15 s of start-up, and a
    # service that uses neither should not pay it.
    import asyncpg

    from callmesh_core.kafka import (
        BatchHandler,
        ConsumerMetrics,
        EventConsumer,
        EventProducer,
        Handler,
        MessageT,
    )

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class StartupError(Exception):
    """A dependency the service needs to start is missing; the message names it."""


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, fit for a log line."""
    parts = urllib.parse.urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


Hook = Callable[[], Awaitable[None]]

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1


@dataclass
class ServiceContext(Generic[SettingsT]):
    """What a service's `build` receives: settings and the shared plumbing, not yet started."""

    settings: SettingsT
    log: EventLogger
    telemetry: Telemetry
    tracer: Tracer
    metrics: CollectorRegistry
    readiness: Readiness
    grpc: GrpcServer
    http: HealthHttpServer
    drain_hooks: list[Hook] = field(default_factory=list)
    close_hooks: list[Hook] = field(default_factory=list)
    _kafka_metrics: ConsumerMetrics | None = field(default=None, init=False)

    def on_drain(self, hook: Hook) -> None:
        """`hook` runs when draining starts; it returns when this replica's work is done."""
        self.drain_hooks.append(hook)

    def on_close(self, hook: Hook) -> None:
        """`hook` runs after gRPC has stopped (close Kafka clients, DB pools); reverse order."""
        self.close_hooks.append(hook)

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        self.readiness.add_check(name, check)

    async def postgres(
        self, *, schema: str, migrations: str | Path | None = None, max_size: int = 10
    ) -> asyncpg.Pool:
        """Apply the service's migrations, open its pool, check it for readiness, close it.

        `migrations` is the service package name (its `migrations/` directory) or a path.
        """
        import asyncpg

        from callmesh_core.db import create_pool, migrate

        dsn = self.settings.postgres_dsn
        try:
            if migrations is not None:
                applied = await migrate(dsn, schema, migrations)
                self.log.info("migrations_applied", schema=schema, versions=applied or "none")
            pool = await create_pool(dsn, schema=schema, max_size=max_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StartupError(
                f"PostgreSQL at {redact_dsn(dsn)}: {type(exc).__name__}: {exc}"
            ) from exc

        async def check() -> str | None:
            async with pool.acquire(timeout=1.0) as connection:
                await connection.fetchval("SELECT 1")
            return None

        async def close() -> None:
            await pool.close()

        self.add_readiness_check("postgres", check)
        self.on_close(close)
        return pool

    async def kafka_producer(self) -> EventProducer:
        """A started idempotent producer, flushed and closed on shutdown."""
        from aiokafka.errors import KafkaError

        from callmesh_core.kafka import EventProducer

        producer = EventProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            tracer=self.tracer,
            client_id=f"callmesh-{self.settings.service_name}-{self.settings.replica_id}",
        )
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise StartupError(
                f"Kafka at {self.settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        self.on_close(producer.stop)
        return producer

    async def kafka_consumer(
        self,
        *,
        group_id: str,
        topics: Sequence[str],
        message_type: type[MessageT],
        handler: Handler[MessageT],
        dlq_producer: EventProducer,
        batch_handler: BatchHandler[MessageT] | None = None,
    ) -> EventConsumer[MessageT]:
        """A started consumer loop; stopped (after finishing its record) on shutdown."""
        from aiokafka.errors import KafkaError

        from callmesh_core.kafka import ConsumerMetrics, EventConsumer

        if self._kafka_metrics is None:  # one set per registry, shared by all consumers
            self._kafka_metrics = ConsumerMetrics(
                self.metrics, metric_prefix(self.settings.service_name)
            )
        consumer = EventConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=group_id,
            topics=topics,
            message_type=message_type,
            handler=handler,
            batch_handler=batch_handler,
            dlq_producer=dlq_producer,
            tracer=self.tracer,
            log=self.log.child("kafka"),
            metrics=self._kafka_metrics,
            client_id=f"callmesh-{self.settings.service_name}-{self.settings.replica_id}",
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise StartupError(
                f"Kafka at {self.settings.kafka_bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        self.on_close(consumer.stop)
        return consumer

    def channel(self, target: str) -> Channel:
        """A client channel to another service, with default deadline and trace propagation."""
        channel = create_channel(
            target,
            tracer=self.tracer,
            default_timeout=self.settings.grpc_client_timeout_seconds,
        )

        async def close() -> None:
            await channel.close()

        self.on_close(close)
        return channel


Build = Callable[[ServiceContext[SettingsT]], Awaitable[None]]


def metric_prefix(service_name: str) -> str:
    """`callmesh_<service>`: the prefix of a service's metric names (docs/observability.md)."""
    return "callmesh_" + service_name.replace("-", "_")


class Service(Generic[SettingsT]):
    """One running service instance; `run_service` drives it from signals, tests directly."""

    def __init__(
        self,
        settings: SettingsT,
        build: Build[SettingsT],
        *,
        log: EventLogger,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        self.build = build
        self.log = log
        self.telemetry = telemetry or Telemetry(
            service_name=settings.service_name,
            replica_id=settings.replica_id,
            otlp_endpoint=settings.otlp_endpoint,
        )
        tracer = self.telemetry.tracer(f"callmesh.{settings.service_name}")
        self.readiness = Readiness()
        # The service's own registry (never prometheus_client's global one): what services
        # register into is exactly what /metrics exposes.
        metrics = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=metrics)
        PlatformCollector(registry=metrics)
        GCCollector(registry=metrics)
        self.context = ServiceContext(
            settings=settings,
            log=log,
            telemetry=self.telemetry,
            tracer=tracer,
            metrics=metrics,
            readiness=self.readiness,
            grpc=GrpcServer(
                host=settings.grpc_host,
                port=settings.grpc_port,
                tracer=tracer,
                log=log,
                metrics=metrics,
                metric_prefix=metric_prefix(settings.service_name),
                max_receive_bytes=settings.grpc_max_receive_mb * 1024 * 1024,
            ),
            http=HealthHttpServer(
                host=settings.http_host,
                port=settings.http_port,
                readiness=self.readiness,
                registry=metrics,
            ),
        )
        self.stop_requested = asyncio.Event()
        self.force_stop = asyncio.Event()

    async def start(self) -> None:
        began = time.monotonic()
        await self.build(self.context)
        http_port = await self.context.http.start()
        grpc_port = await self.context.grpc.start()
        self.readiness.started = True
        self.log.info(
            "ready",
            grpc_port=grpc_port,
            http_port=http_port,
            event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0],
            startup_ms=round((time.monotonic() - began) * 1000),
        )

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: stop waiting for the drain hooks."""
        if self.stop_requested.is_set():
            self.force_stop.set()
        self.stop_requested.set()

    async def drain_and_stop(self) -> None:
        settings = self.settings
        began = time.monotonic()
        self.readiness.draining = True
        self.log.info("draining", grace_seconds=settings.drain_grace_seconds)
        await self.context.grpc.set_serving(False)
        await self._run_drain_hooks(settings.drain_grace_seconds)
        await self.context.grpc.stop(settings.grpc_stop_grace_seconds)
        for hook in reversed(self.context.close_hooks):
            try:
                await hook()
            except Exception:
                self.log.exception("close_hook_failed", hook=getattr(hook, "__qualname__", hook))
        await self.context.http.stop()
        await self.telemetry.shutdown()
        self.log.info("stopped", shutdown_ms=round((time.monotonic() - began) * 1000))

    async def _run_drain_hooks(self, grace: float) -> None:
        if not self.context.drain_hooks:
            return
        drained: asyncio.Future[Any] = asyncio.ensure_future(
            asyncio.gather(*(hook() for hook in self.context.drain_hooks))
        )
        forced: asyncio.Future[Any] = asyncio.ensure_future(self.force_stop.wait())
        done, _ = await asyncio.wait(
            {drained, forced}, timeout=grace, return_when=asyncio.FIRST_COMPLETED
        )
        forced.cancel()
        if drained in done:
            if drained.exception() is not None:
                self.log.error("drain_failed", error=repr(drained.exception()))
            return
        drained.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drained
        reason = "second signal" if self.force_stop.is_set() else "grace period over"
        self.log.warning("drain_cut_short", reason=reason)


async def serve(service: Service[SettingsT]) -> int:
    """Start `service`, wait for SIGTERM/SIGINT, drain, stop; the process exit code."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.request_stop)
    try:
        try:
            await service.start()
        except Exception as exc:
            reason = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
            service.log.error("startup_failed", error=reason)
            await _stop_quietly(service)
            return EXIT_STARTUP_FAILED
        await service.stop_requested.wait()
        await service.drain_and_stop()
        return EXIT_OK
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


async def _stop_quietly(service: Service[SettingsT]) -> None:
    with contextlib.suppress(Exception):
        await service.context.grpc.stop(0)
    with contextlib.suppress(Exception):
        await service.context.http.stop()
    for hook in reversed(service.context.close_hooks):
        with contextlib.suppress(Exception):
            await hook()
    with contextlib.suppress(Exception):
        await service.telemetry.shutdown()


def run_service(
    settings_type: type[SettingsT],
    build: Build[SettingsT],
    environ: Mapping[str, str] | None = None,
) -> None:
    """The body of every service's `app.main()`; exits the process when the service stops."""
    settings = load_settings_or_exit(settings_type, environ)
    # gRPC's C core writes its own unstructured lines to stderr (e.g. "Got goaway" at INFO);
    # keep it to errors unless the operator asked otherwise. Read when gRPC first starts.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    log = configure_logging(
        service=settings.service_name,
        replica=settings.replica_id,
        level=settings.log_level,
        style=settings.log_format,
    )

    telemetry = Telemetry(
        service_name=settings.service_name,
        replica_id=settings.replica_id,
        otlp_endpoint=settings.otlp_endpoint,
    )
    # The process entry point is the one place allowed to install OpenTelemetry's global
    # providers, so instrumentation that looks them up (rather than being handed a tracer)
    # reports into this service's pipeline too.
    trace.set_tracer_provider(telemetry.tracer_provider)
    metrics.set_meter_provider(telemetry.meter_provider)

    async def main() -> int:
        return await serve(Service(settings, build, log=log, telemetry=telemetry))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(main())
    sys.exit(code)
