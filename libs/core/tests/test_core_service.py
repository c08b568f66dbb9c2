"""The HTTP side port and the service runner's drain sequence, in-process on real sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import asyncpg
import grpc
import pytest
from callmesh_core.config import Port, ServiceSettings, load_settings
from callmesh_core.db import claim_event
from callmesh_core.http import HealthHttpServer, Readiness
from callmesh_core.kafka import ConsumedEvent, ensure_topics
from callmesh_core.logging import EventLogger
from callmesh_core.service import Service, ServiceContext, StartupError, redact_dsn
from google.protobuf.wrappers_pb2 import StringValue
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field


class DemoSettings(ServiceSettings):
    service_name: ClassVar[str] = "demo"
    grpc_port: Port = Field(default=50099)
    http_port: Port = Field(default=9199)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _get(port: int, path: str) -> tuple[int, str, dict[str, Any] | None]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        text = await response.text()
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, text, body


async def test_healthz_readyz_metrics() -> None:
    registry = CollectorRegistry()
    calls = Counter("callmesh_demo_calls", "calls seen", ["tenant"], registry=registry)
    calls.labels(tenant="acme").inc(3)
    readiness = Readiness()
    server = HealthHttpServer(host="127.0.0.1", port=0, readiness=readiness, registry=registry)
    port = await server.start()
    try:
        status, _, body = await _get(port, "/healthz")
        assert (status, body) == (200, {"status": "alive"})

        status, _, body = await _get(port, "/readyz")
        assert (status, body) == (503, {"status": "starting", "checks": {}})

        readiness.started = True
        broker_down: list[str] = []

        async def kafka_check() -> str | None:
            return broker_down[0] if broker_down else None

        readiness.add_check("kafka", kafka_check)
        status, _, body = await _get(port, "/readyz")
        assert (status, body) == (200, {"status": "ready", "checks": {"kafka": {"ok": True}}})

        broker_down.append("no broker reachable")
        status, _, body = await _get(port, "/readyz")
        assert status == 503
        assert body == {
            "status": "not_ready",
            "checks": {"kafka": {"ok": False, "reason": "no broker reachable"}},
        }

        broker_down.clear()
        readiness.draining = True
        status, _, body = await _get(port, "/readyz")
        assert status == 503 and body is not None and body["status"] == "draining"

        status, text, _ = await _get(port, "/metrics")
        assert status == 200
        assert 'callmesh_demo_calls_total{tenant="acme"} 3.0' in text.splitlines()
    finally:
        await server.stop()


async def _grpc_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return int(response.status)


def _settings(**extra: str) -> DemoSettings:
    return load_settings(
        DemoSettings,
        {
            "CALLMESH_GRPC_PORT": str(free_port()),
            "CALLMESH_HTTP_PORT": str(free_port()),
            **extra,
        },
    )


async def test_drain_sequence_readiness_false_until_work_is_done() -> None:
    settings = _settings(CALLMESH_DRAIN_GRACE_SECONDS="10")
    work_done = asyncio.Event()
    drain_started = asyncio.Event()
    closed: list[str] = []

    async def build(ctx: ServiceContext[DemoSettings]) -> None:
        Counter("callmesh_demo_built", "built once", registry=ctx.metrics).inc()

        async def drain() -> None:
            drain_started.set()
            await work_done.wait()

        async def close_first() -> None:
            closed.append("first")

        async def close_second() -> None:
            closed.append("second")

        ctx.on_drain(drain)
        ctx.on_close(close_first)
        ctx.on_close(close_second)

    service = Service(settings, build, log=EventLogger(logging.getLogger("callmesh.test.svc")))
    await service.start()
    assert (await _get(settings.http_port, "/readyz"))[0] == 200
    assert await _grpc_health(settings.grpc_port) == health_pb2.HealthCheckResponse.SERVING
    _, metrics, _ = await _get(settings.http_port, "/metrics")
    assert "callmesh_demo_built_total 1.0" in metrics
    assert "process_cpu_seconds_total" in metrics

    stopping = asyncio.create_task(service.drain_and_stop())
    await asyncio.wait_for(drain_started.wait(), 2)
    # While the drain hook holds: not ready over HTTP, NOT_SERVING over gRPC, still running.
    status, _, body = await _get(settings.http_port, "/readyz")
    assert status == 503 and body is not None and body["status"] == "draining"
    assert await _grpc_health(settings.grpc_port) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not stopping.done()

    work_done.set()
    await asyncio.wait_for(stopping, 5)
    assert closed == ["second", "first"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(settings.http_port, "/healthz")


async def test_drain_is_cut_short_by_grace_and_by_second_signal() -> None:
    async def build(ctx: ServiceContext[DemoSettings]) -> None:
        async def never_done() -> None:
            await asyncio.Event().wait()

        ctx.on_drain(never_done)

    log = EventLogger(logging.getLogger("callmesh.test.svc"))
    service = Service(_settings(CALLMESH_DRAIN_GRACE_SECONDS="0.3"), build, log=log)
    await service.start()
    began = time.monotonic()
    await asyncio.wait_for(service.drain_and_stop(), 5)
    assert 0.25 < time.monotonic() - began < 2.0

    service = Service(_settings(CALLMESH_DRAIN_GRACE_SECONDS="60"), build, log=log)
    await service.start()
    service.request_stop()
    stopping = asyncio.create_task(service.drain_and_stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()
    service.request_stop()  # the second Ctrl-C
    await asyncio.wait_for(stopping, 3)


async def test_context_wires_postgres_and_kafka_and_closes_them(
    postgres_dsn: str, kafka_bootstrap: str, schema: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_init.sql").write_text("CREATE TABLE seen (value text PRIMARY KEY);")
    topic = f"test.{uuid.uuid4().hex[:12]}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1)
    settings = _settings(
        CALLMESH_POSTGRES_DSN=postgres_dsn, CALLMESH_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap
    )
    wired: dict[str, Any] = {}

    async def build(ctx: ServiceContext[DemoSettings]) -> None:
        pool = await ctx.postgres(schema=schema, migrations=tmp_path)
        producer = await ctx.kafka_producer()

        async def handler(event: ConsumedEvent[StringValue]) -> None:
            async with pool.acquire() as connection, connection.transaction():
                if await claim_event(connection, event.consumer_group, event.event_id):
                    await connection.execute("INSERT INTO seen VALUES ($1)", event.message.value)

        await ctx.kafka_consumer(
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            topics=[topic],
            message_type=StringValue,
            handler=handler,
            dlq_producer=producer,
        )
        wired.update(pool=pool, producer=producer)

    service = Service(settings, build, log=EventLogger(logging.getLogger("callmesh.test.svc")))
    await service.start()
    try:
        status, _, body = await _get(settings.http_port, "/readyz")
        assert (status, body) == (200, {"status": "ready", "checks": {"postgres": {"ok": True}}})
        await wired["producer"].send(topic, StringValue(value="hello"), key="k")
        pool: asyncpg.Pool = wired["pool"]
        deadline = time.monotonic() + 15
        while await pool.fetchval("SELECT count(*) FROM seen") == 0:
            assert time.monotonic() < deadline, "the consumer never applied the event"
            await asyncio.sleep(0.05)
    finally:
        await service.drain_and_stop()
    assert wired["pool"].is_closing()


async def test_missing_database_fails_start_up_naming_it_without_the_password() -> None:
    settings = _settings(
        CALLMESH_POSTGRES_DSN=f"postgresql://callmesh:hunter2@127.0.0.1:{free_port()}/callmesh"
    )

    async def build(ctx: ServiceContext[DemoSettings]) -> None:
        await ctx.postgres(schema="demo")

    service = Service(settings, build, log=EventLogger(logging.getLogger("callmesh.test.svc")))
    with pytest.raises(StartupError) as caught:
        await service.start()
    assert str(caught.value).startswith("PostgreSQL at postgresql://callmesh:***@127.0.0.1:")
    assert "hunter2" not in str(caught.value)


def test_redact_dsn() -> None:
    assert redact_dsn("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
