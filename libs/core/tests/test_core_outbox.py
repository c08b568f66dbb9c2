"""The generic outbox relay against the real local PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from callmesh_core.db import create_pool
from callmesh_core.kafka import EVENT_ID_HEADER, EventProducer, ensure_topics
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxEvent, OutboxRelay
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace

LOG = EventLogger(logging.getLogger("callmesh.test.outbox"))


async def test_relay_publishes_rows_in_order_once_and_on_notify(
    postgres_dsn: str, kafka_bootstrap: str, schema: str
) -> None:
    topic = f"test.outbox.{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, [topic], partitions=1, with_dlq=False)
    setup = await asyncpg.connect(postgres_dsn)
    try:
        await setup.execute(f"CREATE SCHEMA {schema}")
        await setup.execute(
            f"CREATE TABLE {schema}.demo_outbox (id bigserial PRIMARY KEY, k text, v text)"
        )
    finally:
        await setup.close()
    pool = await create_pool(postgres_dsn, schema=schema, max_size=3)
    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=trace.get_tracer("t"))
    await producer.start()

    def to_event(row: Any) -> OutboxEvent:
        return OutboxEvent(topic, StringValue(value=row["v"]), row["k"], f"demo/{row['id']}")

    relay = OutboxRelay(
        pool,
        producer,
        LOG,
        table="demo_outbox",
        to_event=to_event,
        lock_key=0x5445_5354,
        notify_channel=f"{schema}_demo",
        poll_seconds=30.0,  # long: the second batch must arrive through NOTIFY, not polling
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async with pool.acquire() as conn:
            for value in ("a", "b", "c"):
                await conn.execute("INSERT INTO demo_outbox (k, v) VALUES ('key', $1)", value)
        assert await relay.publish_pending() == 3
        assert await relay.publish_pending() == 0  # rows are gone once acknowledged
        await relay.start()
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO demo_outbox (k, v) VALUES ('key', 'd')")
            await conn.execute(f"NOTIFY {schema}_demo")
        got: list[tuple[str, str]] = []
        while len(got) < 4:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 10)
            for records in batch.values():
                for record in records:
                    assert record.value is not None
                    event_id = dict(record.headers)[EVENT_ID_HEADER].decode()
                    got.append((StringValue.FromString(record.value).value, event_id))
        assert [value for value, _ in got] == ["a", "b", "c", "d"]
        assert got[0][1] == "demo/1"
        # The relay counts a batch after deleting its rows, just after Kafka has them.
        for _ in range(100):
            if relay.published == 4:
                break
            await asyncio.sleep(0.05)
        assert relay.published == 4
    finally:
        await relay.stop()
        await consumer.stop()
        await producer.stop()
        await pool.close()
