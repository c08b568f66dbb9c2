"""The CDR consumer end to end: real Kafka topic, real `EventConsumer`, real PostgreSQL.

Seven call sequences are published with duplicates interleaved, a poison record and an
undecodable one in the middle, and the consumer is stopped and replaced (same group) halfway;
exactly seven CDRs must come out, each with the right outcome, durations and parties. A second
consumer group then replays the whole topic from the start and must change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh_api.cdr import CdrIngest, call_from_row
from callmesh_core.kafka import (
    DLQ_REASON_HEADER,
    EventConsumer,
    EventProducer,
    dlq_topic,
    ensure_topics,
)
from callmesh_core.logging import EventLogger
from opentelemetry import trace

from .test_cdr_fold import DAY, check, new_users, scenarios

LOG = EventLogger(logging.getLogger("callmesh.test.cdr"))


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    name = f"test.calls.{uuid.uuid4().hex[:12]}"
    await ensure_topics(kafka_bootstrap, [name], partitions=3)
    return name


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[EventProducer]:
    producer = EventProducer(bootstrap_servers=kafka_bootstrap, tracer=trace.get_tracer("test"))
    await producer.start()
    yield producer
    await producer.stop()


def consumer(
    kafka_bootstrap: str, topic: str, group: str, ingest: CdrIngest, producer: EventProducer
) -> EventConsumer[CallEvent]:
    return EventConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        topics=[topic],
        message_type=CallEvent,
        handler=ingest.handle,
        dlq_producer=producer,
        tracer=trace.get_tracer("test"),
        log=LOG,
        retry_backoff_seconds=0.01,
    )


async def eventually(
    probe: Callable[[], Coroutine[Any, Any, bool]], within: float = 20.0, what: str = ""
) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached in time: {what}")
        await asyncio.sleep(0.05)


async def publish(producer: EventProducer, topic: str, events: list[CallEvent]) -> None:
    for event in events:
        await producer.send(topic, event, key=event.call_id, event_id=event.event_id)


async def test_sequences_with_duplicates_poison_and_restart_make_exactly_one_cdr_each(
    kafka_bootstrap: str, topic: str, producer: EventProducer, api_pool: asyncpg.Pool
) -> None:
    tenant = str(uuid.uuid4())
    users = new_users()
    cases = scenarios(tenant, users, DAY)
    rng = random.Random(11)
    stream: list[CallEvent] = []
    # Calls overlap in time, as they do: merge the calls' streams, keeping each call's order.
    pending = [list(script.events) for script, _ in cases]
    while pending:
        source = rng.choice(pending)
        stream.append(source.pop(0))
        if rng.random() < 0.3:  # a producer retry or a replayed record: the same event again
            stream.append(rng.choice(stream))
        pending = [p for p in pending if p]
    distinct = {(e.call_id, e.leg, e.seq) for e in stream}
    half = len(stream) // 2
    ingest = CdrIngest(api_pool)
    group = f"api-cdr-{uuid.uuid4().hex[:8]}"
    call_ids = [uuid.UUID(script.call_id) for script, _ in cases]

    async def applied() -> int:
        count: int = await api_pool.fetchval(
            "SELECT count(*) FROM call_events WHERE call_id = ANY($1::uuid[])", call_ids
        )
        return count

    first = consumer(kafka_bootstrap, topic, group, ingest, producer)
    await first.start()
    try:
        await publish(producer, topic, stream[:half])
        await producer.send_raw(topic, b"\xff\x00 not a protobuf", key=b"x", headers=[])
        poison = CallEvent()
        poison.CopyFrom(cases[0][0].events[0])
        poison.call_id = "not-a-call-id"
        await producer.send(topic, poison, key="poison")
        expected_first = len({(e.call_id, e.leg, e.seq) for e in stream[:half]})
        await eventually(lambda: _equals(applied, expected_first), what="first half applied")
    finally:
        await first.stop()

    second = consumer(kafka_bootstrap, topic, group, CdrIngest(api_pool), producer)
    await publish(producer, topic, stream[half:] + stream[: half // 2])  # more duplicates
    await second.start()
    try:
        await eventually(lambda: _equals(applied, len(distinct)), what="every event applied")
        await eventually(lambda: _closed(api_pool, call_ids), what="every call closed")
    finally:
        await second.stop()

    rows = await api_pool.fetch("SELECT * FROM cdrs WHERE tenant_id = $1", uuid.UUID(tenant))
    assert len(rows) == len(cases)
    by_id = {row["call_id"]: call_from_row(row) for row in rows}
    for script, expected in cases:
        cdr = by_id[uuid.UUID(script.call_id)]
        check(cdr, expected)
        attempt = script.events[0].attempt  # the "a" leg's attempt: who called whom
        assert (cdr.caller_number, cdr.callee_number) == (
            attempt.caller_number,
            attempt.callee_number,
        )
    legs = await api_pool.fetchval(
        "SELECT count(*) FROM call_legs WHERE call_id = ANY($1::uuid[])", call_ids
    )
    assert legs == len({(e.call_id, e.leg) for e in stream})

    # Both bad records went to the DLQ, with the reason.
    reasons = await _dlq_reasons(kafka_bootstrap, dlq_topic(topic), 2)
    assert sorted(reasons) == ["poison", "undecodable"]

    # Replaying the whole topic (a new group reads it from the start) changes nothing.
    before = {r["call_id"]: r["updated_at"] for r in rows}
    replay = consumer(kafka_bootstrap, topic, f"replay-{group}", CdrIngest(api_pool), producer)
    await replay.start()
    try:
        await eventually(
            lambda: _consumed_all(kafka_bootstrap, topic, f"replay-{group}"), what="replay"
        )
    finally:
        await replay.stop()
    after = await api_pool.fetch(
        "SELECT call_id, updated_at FROM cdrs WHERE tenant_id = $1", uuid.UUID(tenant)
    )
    assert {r["call_id"]: r["updated_at"] for r in after} == before
    assert await applied() == len(distinct)


async def _equals(probe: Callable[[], Coroutine[Any, Any, int]], wanted: int) -> bool:
    return await probe() == wanted


async def _closed(pool: asyncpg.Pool, call_ids: list[uuid.UUID]) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM cdrs WHERE call_id = ANY($1::uuid[]) AND closed", call_ids
    )
    return bool(count == len(call_ids))


async def _consumed_all(bootstrap: str, topic: str, group: str) -> bool:
    """The group has committed every record of the topic."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(3)]
        ends = await probe.end_offsets(partitions)
        for partition in partitions:
            if (await probe.committed(partition) or 0) < ends[partition]:
                return False
        return True
    finally:
        await probe.stop()


async def _dlq_reasons(bootstrap: str, topic: str, wanted: int) -> list[str]:
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await reader.start()
    reasons: list[str] = []
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while len(reasons) < wanted and asyncio.get_running_loop().time() < deadline:
            for batch in (await reader.getmany(timeout_ms=200)).values():
                for record in batch:
                    value = dict(record.headers).get(DLQ_REASON_HEADER, b"")
                    reasons.append(bytes(value).decode())
    finally:
        await reader.stop()
    return reasons
