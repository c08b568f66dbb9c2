"""The local stack is real: PostgreSQL answers SQL and Kafka carries a record end to end."""

from __future__ import annotations

import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from callmesh_devstack.stack import Stack


async def test_postgres_answers_sql(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT current_database()") == "callmesh"
        assert await conn.fetchval("SELECT current_user") == "callmesh"
    finally:
        await conn.close()


async def test_kafka_round_trip(kafka_bootstrap: str) -> None:
    topic = f"devstack-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"ping", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"g-{topic}",
    )
    await consumer.start()
    try:
        record = await consumer.getone()
        assert (record.key, record.value) == (b"k", b"ping")
    finally:
        await consumer.stop()


def test_servers_use_their_own_ports(devstack: Stack) -> None:
    # Never the machine's defaults, so an existing PostgreSQL/Kafka is left alone.
    assert devstack.postgres.port != 5432
    assert devstack.kafka.port != 9092
    assert devstack.postgres.data.is_relative_to(devstack.layout.local)
    assert devstack.kafka.data.is_relative_to(devstack.layout.local)


def test_start_is_idempotent(devstack: Stack) -> None:
    # A second start of a running stack reuses it instead of starting another server.
    again = Stack.from_env(devstack.layout)
    again.up()
    assert again.started == []
