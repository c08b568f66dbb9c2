"""The producer and consumer loop against the real local Kafka broker (and PostgreSQL)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from callmesh_core.db import claim_event, create_pool, migrate
from callmesh_core.kafka import (
    DLQ_ATTEMPTS_HEADER,
    DLQ_ERROR_HEADER,
    DLQ_OFFSET_HEADER,
    DLQ_PARTITION_HEADER,
    DLQ_REASON_HEADER,
    DLQ_TOPIC_HEADER,
    EVENT_ID_HEADER,
    ConsumedEvent,
    ConsumerMetrics,
    EventConsumer,
    EventProducer,
    PoisonMessage,
    dlq_topic,
    ensure_topics,
)
from callmesh_core.logging import EventLogger
from callmesh_core.telemetry import Telemetry
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

LOG = EventLogger(logging.getLogger("callmesh.test.kafka"))


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"test.{uuid.uuid4().hex[:12]}"
    await ensure_topics(kafka_bootstrap, [name], partitions=1)
    return name


@pytest.fixture
async def producer(
    kafka_bootstrap: str, spans: tuple[Telemetry, InMemorySpanExporter]
) -> AsyncIterator[EventProducer]:
    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=spans[0].tracer("p"))
    await producer.start()
    yield producer
    await producer.stop()


def _consumer(
    kafka_bootstrap: str,
    topic: str,
    handler: Callable[[ConsumedEvent[StringValue]], Awaitable[None]],
    producer: EventProducer,
    telemetry: Telemetry,
    group: str | None = None,
) -> EventConsumer[StringValue]:
    return EventConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group or f"g-{uuid.uuid4().hex[:8]}",
        topics=[topic],
        message_type=StringValue,
        handler=handler,
        dlq_producer=producer,
        tracer=telemetry.tracer("c"),
        log=LOG,
        retry_backoff_seconds=0.01,
    )


async def _eventually(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _read_all(kafka_bootstrap: str, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record currently in `topic` (read up to the end offsets, then stop)."""
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
    await reader.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        partitions = [TopicPartition(topic, 0)]  # the `topic` fixture makes one partition
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        deadline = asyncio.get_running_loop().time() + 15
        while [tp for tp in partitions if await reader.position(tp) < ends[tp]]:
            assert asyncio.get_running_loop().time() < deadline, "DLQ not readable in time"
            for batch in (await reader.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await reader.stop()
    return records


async def _committed(kafka_bootstrap: str, group: str, topic: str) -> int | None:
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await probe.start()
    try:
        committed: int | None = await probe.committed(TopicPartition(topic, 0))
        return committed
    finally:
        await probe.stop()


async def test_round_trip_keeps_trace_context(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = spans
    seen: list[tuple[ConsumedEvent[StringValue], int]] = []

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        seen.append((event, trace.get_current_span().get_span_context().trace_id))

    with telemetry.tracer("sip").start_as_current_span("INVITE") as root:
        event_id = await producer.send(topic, StringValue(value="call started"), key="call-1")
    consumer = _consumer(kafka_bootstrap, topic, handler, producer, telemetry)
    await consumer.start()
    try:
        await _eventually(lambda: len(seen) == 1)
    finally:
        await consumer.stop()

    event, handler_trace_id = seen[0]
    assert event.message.value == "call started"
    assert event.key == b"call-1"
    assert event.event_id == event_id
    assert handler_trace_id == root.get_span_context().trace_id
    finished = exporter.get_finished_spans()
    publish = next(s for s in finished if s.kind is SpanKind.PRODUCER)
    process = next(s for s in finished if s.kind is SpanKind.CONSUMER)
    assert publish.parent is not None
    assert publish.parent.span_id == root.get_span_context().span_id
    assert process.context.trace_id == root.get_span_context().trace_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id


async def test_duplicates_and_redelivery_apply_the_effect_once(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
    postgres_dsn: str,
    schema: str,
    tmp_path: Path,
) -> None:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_cdr.sql").write_text(
        "CREATE TABLE cdr_totals (tenant text PRIMARY KEY, calls integer NOT NULL);"
    )
    await migrate(postgres_dsn, schema, migrations)
    pool = await create_pool(postgres_dsn, schema=schema, max_size=2)
    handled: list[str] = []
    crash_after_effect = {"e-2"}

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        handled.append(event.event_id)
        connection: asyncpg.Connection
        async with pool.acquire() as connection, connection.transaction():
            if await claim_event(connection, event.consumer_group, event.event_id):
                await connection.execute(
                    "INSERT INTO cdr_totals VALUES ($1, 1)"
                    " ON CONFLICT (tenant) DO UPDATE SET calls = cdr_totals.calls + 1",
                    event.message.value,
                )
        if event.event_id in crash_after_effect:
            # The effect is committed but the handler fails before the offset is: the record
            # is handled again, exactly the redelivery a crash would cause.
            crash_after_effect.discard(event.event_id)
            raise ConnectionResetError("lost the broker after the effect")

    # e-1 is published twice (an application-level re-send), e-2 is redelivered.
    await producer.send(topic, StringValue(value="acme"), key="c1", event_id="e-1")
    await producer.send(topic, StringValue(value="acme"), key="c1", event_id="e-1")
    await producer.send(topic, StringValue(value="acme"), key="c2", event_id="e-2")
    await producer.send(topic, StringValue(value="globex"), key="c3", event_id="e-3")
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(kafka_bootstrap, topic, handler, producer, spans[0], group=group)
    await consumer.start()
    try:
        await _eventually(lambda: "e-3" in handled)
    finally:
        await consumer.stop()

    try:
        async with pool.acquire() as connection:
            totals = dict(await connection.fetch("SELECT tenant, calls FROM cdr_totals"))
    finally:
        await pool.close()

    assert handled == ["e-1", "e-1", "e-2", "e-2", "e-3"]
    assert totals == {"acme": 2, "globex": 1}
    assert await _read_all(kafka_bootstrap, dlq_topic(topic)) == []
    # All four records are committed, so a restarted consumer would not see them again.
    assert await _committed(kafka_bootstrap, group, topic) == 4


async def test_poison_goes_to_dlq_and_partition_keeps_flowing(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    handled: list[str] = []
    attempts: dict[str, int] = {}

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        value = event.message.value
        attempts[value] = attempts.get(value, 0) + 1
        if value == "refused":
            raise PoisonMessage("tenant does not exist")
        if value == "always-fails":
            raise RuntimeError("bug")
        if value == "flaky" and attempts[value] < 3:
            raise TimeoutError("database busy")
        handled.append(value)

    await producer.send(topic, StringValue(value="first"), key="k")  # offset 0
    await producer.send_raw(topic, b"\xff\xff not protobuf", key=b"k", headers=[])  # 1
    await producer.send(topic, StringValue(value="refused"), key="k")  # 2
    await producer.send(topic, StringValue(value="always-fails"), key="k")  # 3
    await producer.send(topic, StringValue(value="flaky"), key="k")  # 4
    await producer.send(topic, StringValue(value="last"), key="k")  # 5
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(kafka_bootstrap, topic, handler, producer, spans[0], group=group)
    registry = CollectorRegistry()
    consumer.metrics = ConsumerMetrics(registry, "callmesh_test")
    await consumer.start()
    try:
        await _eventually(lambda: "last" in handled)
    finally:
        await consumer.stop()

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"callmesh_test_{name}", {"group": group, **labels})

    assert sample("kafka_records_total", topic=topic, outcome="handled") == 3
    assert sample("kafka_records_total", topic=topic, outcome="dead_lettered") == 3
    assert sample("kafka_handler_retries_total", topic=topic) == 4  # 2 for flaky, 2 for bug
    assert sample("kafka_consumer_lag", topic=topic, partition="0") == 0

    assert handled == ["first", "flaky", "last"]
    assert attempts["always-fails"] == 3  # bounded retries
    assert attempts["refused"] == 1  # a poison verdict is not retried
    dead = await _read_all(kafka_bootstrap, dlq_topic(topic))
    assert len(dead) == 3
    by_offset = {int(dict(r.headers)[DLQ_OFFSET_HEADER]): (r, dict(r.headers)) for r in dead}
    assert sorted(by_offset) == [1, 2, 3]
    record, headers = by_offset[1]
    assert record.value == b"\xff\xff not protobuf"  # copied untouched
    assert record.key == b"k"
    assert headers[DLQ_REASON_HEADER] == b"undecodable"
    assert headers[DLQ_TOPIC_HEADER] == topic.encode()
    assert headers[DLQ_PARTITION_HEADER] == b"0"
    assert by_offset[2][1][DLQ_REASON_HEADER] == b"poison"
    assert b"tenant does not exist" in by_offset[2][1][DLQ_ERROR_HEADER]
    assert EVENT_ID_HEADER in by_offset[2][1]  # the original headers are kept
    assert by_offset[3][1][DLQ_REASON_HEADER] == b"handler_failed"
    assert by_offset[3][1][DLQ_ATTEMPTS_HEADER] == b"3"

    # Everything, poison included, is committed: the partition is not stuck.
    assert await _committed(kafka_bootstrap, group, topic) == 6


async def test_failed_dlq_write_rewinds_instead_of_skipping(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry = spans[0]
    # A DLQ producer that is not connected yet: writing the dead letter fails at first.
    late_dlq = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=telemetry.tracer("dlq"))
    handled: list[str] = []
    poison_seen = 0

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        nonlocal poison_seen
        if event.message.value == "poison":
            poison_seen += 1
            raise PoisonMessage("unusable")
        handled.append(event.message.value)

    await producer.send(topic, StringValue(value="before"), key="k")
    await producer.send(topic, StringValue(value="poison"), key="k")
    await producer.send(topic, StringValue(value="after"), key="k")
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = EventConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topics=[topic],
        message_type=StringValue,
        handler=handler,
        dlq_producer=late_dlq,
        tracer=telemetry.tracer("c"),
        log=LOG,
        dlq_send_timeout_seconds=0.3,
    )
    await consumer.start()
    try:
        await _eventually(lambda: poison_seen >= 2)  # rewound and delivered again
        assert handled == ["before"]  # nothing after the poison was skipped past it
        await late_dlq.start()
        await _eventually(lambda: handled == ["before", "after"])
    finally:
        await consumer.stop()
        await late_dlq.stop()
    dead = await _read_all(kafka_bootstrap, dlq_topic(topic))
    assert dead and {dict(r.headers)[DLQ_OFFSET_HEADER] for r in dead} == {b"1"}
    assert await _committed(kafka_bootstrap, group, topic) == 3


async def test_a_dependency_outage_waits_instead_of_dead_lettering(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """Five failures in a row from a database that refuses connections exceed max_attempts,
    yet the record is applied once the database is back, and nothing reaches the DLQ."""
    calls: list[str] = []

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        calls.append(event.message.value)
        if event.message.value == "needs-db" and calls.count("needs-db") <= 5:
            raise ConnectionRefusedError("database is down")

    await producer.send(topic, StringValue(value="needs-db"), key="k")
    await producer.send(topic, StringValue(value="after"), key="k")
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(kafka_bootstrap, topic, handler, producer, spans[0], group=group)
    await consumer.start()
    try:
        await _eventually(lambda: "after" in calls)
    finally:
        await consumer.stop()
    assert calls == ["needs-db"] * 6 + ["after"]
    assert await _committed(kafka_bootstrap, group, topic) == 2
    assert await _read_all(kafka_bootstrap, dlq_topic(topic)) == []


async def test_batches_apply_together_and_a_refused_batch_falls_back_per_record(
    kafka_bootstrap: str,
    topic: str,
    producer: EventProducer,
    spans: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    """A batch handler gets a fetched batch at once; when it refuses one (a poison record in
    it), the records go through the per-record path, which dead-letters only the culprit."""
    attempted: list[list[str]] = []
    applied_in_batches: list[list[str]] = []
    one_by_one: list[str] = []

    async def batch_handler(events: Sequence[ConsumedEvent[StringValue]]) -> None:
        names = [event.message.value for event in events]
        attempted.append(names)
        if "poison" in names:
            raise PoisonMessage("the batch holds a record that can never apply")
        applied_in_batches.append(names)

    async def handler(event: ConsumedEvent[StringValue]) -> None:
        if event.message.value == "poison":
            raise PoisonMessage("can never apply")
        one_by_one.append(event.message.value)

    group = f"g-{uuid.uuid4().hex[:8]}"

    def consumer() -> EventConsumer[StringValue]:
        return EventConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            topics=[topic],
            message_type=StringValue,
            handler=handler,
            batch_handler=batch_handler,
            dlq_producer=producer,
            tracer=spans[0].tracer("c"),
            log=LOG,
            retry_backoff_seconds=0.01,
        )

    # Everything is published before the consumer starts, so one fetch returns it all.
    for value in ["a", "b", "poison", "c"]:
        await producer.send(topic, StringValue(value=value), key="k")
    first = consumer()
    await first.start()
    try:
        await _eventually(lambda: "c" in one_by_one)
    finally:
        await first.stop()
    assert attempted == [["a", "b", "poison", "c"]]
    assert one_by_one == ["a", "b", "c"] and applied_in_batches == []

    for value in ["d", "e", "f"]:
        await producer.send(topic, StringValue(value=value), key="k")
    second = consumer()
    await second.start()
    try:
        await _eventually(lambda: bool(applied_in_batches))
    finally:
        await second.stop()
    assert applied_in_batches == [["d", "e", "f"]] and one_by_one == ["a", "b", "c"]
    dead = await _read_all(kafka_bootstrap, dlq_topic(topic))
    assert [StringValue.FromString(r.value).value for r in dead if r.value] == ["poison"]
    assert await _committed(kafka_bootstrap, group, topic) == 7
