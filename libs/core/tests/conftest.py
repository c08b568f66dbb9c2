"""Fixtures shared by callmesh_core's tests: telemetry that records spans, unique schemas."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from callmesh_core.telemetry import Telemetry
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def spans() -> Iterator[tuple[Telemetry, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(
        service_name="test",
        replica_id="test-0",
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    yield telemetry, exporter
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


@pytest.fixture
async def schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A unique, initially absent schema name; dropped with everything in it afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    connection = await asyncpg.connect(postgres_dsn)
    try:
        await connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    finally:
        await connection.close()
