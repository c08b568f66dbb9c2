"""`CdrIngest` on the real PostgreSQL without Kafka: batches, duplicates, racing redeliveries."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh_api.cdr import CdrIngest, InvalidCallEvent, call_from_row, fold_events
from callmesh_core.kafka import ConsumedEvent, PoisonMessage

from .test_cdr_fold import DAY, missed_inbound, new_users, scenarios


async def stored(pool: asyncpg.Pool, tenant: str) -> dict[uuid.UUID, object]:
    rows = await pool.fetch("SELECT * FROM cdrs WHERE tenant_id = $1", uuid.UUID(tenant))
    return {row["call_id"]: call_from_row(row) for row in rows}


async def test_a_batch_with_duplicates_stores_what_the_fold_says(api_pool: asyncpg.Pool) -> None:
    tenant = str(uuid.uuid4())
    events = [e for script, _ in scenarios(tenant, new_users(), DAY) for e in script.events]
    ingest = CdrIngest(api_pool)
    with_duplicates = events + events[::3]
    assert await ingest.apply(with_duplicates[:40] + with_duplicates[:10]) == 40
    assert await ingest.apply(with_duplicates) == len(events) - 40
    assert await ingest.apply(events) == 0  # everything again: nothing new
    expected = {cdr.call_id: cdr for cdr in fold_events(events)}
    assert await stored(api_pool, tenant) == expected


async def test_concurrent_writers_of_one_call_lose_nothing(api_pool: asyncpg.Pool) -> None:
    """Two consumers briefly own the same partition during a rebalance and fold different
    events of the same call at the same moment (here: one the "a" leg, the other the rest,
    each in order, one event per transaction as the handler does). The per-call lock makes
    them take turns, so neither overwrites the other's change."""
    tenant, users = str(uuid.uuid4()), new_users()
    scripts = [
        script
        for hour in range(3)
        for script, _ in scenarios(tenant, users, DAY + dt.timedelta(hours=hour))
    ]

    async def consume(ingest: CdrIngest, stream: list[Any]) -> int:
        applied = 0
        for event in stream:
            applied += await ingest.apply([event])
        return applied

    first, second = CdrIngest(api_pool), CdrIngest(api_pool)
    for _ in range(2):  # the second round is pure redelivery: nothing changes
        applied = 0
        for script in scripts:  # both writers on the same call at once
            a_leg = [e for e in script.events if e.leg == "a"]
            others = [e for e in script.events if e.leg != "a"]
            counts = await asyncio.gather(consume(first, a_leg), consume(second, others))
            applied += sum(counts)
    assert applied == 0
    events = [e for script in scripts for e in script.events]
    expected = {cdr.call_id: cdr for cdr in fold_events(events)}
    assert await stored(api_pool, tenant) == expected
    raw = await api_pool.fetchval(
        "SELECT count(*) FROM call_events WHERE tenant_id = $1", uuid.UUID(tenant)
    )
    assert raw == len(events)


async def test_producer_garbage_is_stored_cleaned_or_rejected(api_pool: asyncpg.Pool) -> None:
    tenant = str(uuid.uuid4())
    script = missed_inbound(tenant, new_users(), DAY, "+78122222222")
    script.events[0].attempt.caller_name = "Cli\x00ent"  # PostgreSQL text cannot hold NUL
    script.events[-1].ended.sip_status = 70_000  # not a SIP status; would overflow integer
    script.events[-1].ended.q850_cause = 4_000_000_000
    assert await CdrIngest(api_pool).apply(script.events) == len(script.events)
    row = await api_pool.fetchrow(
        "SELECT caller_name, sip_status, outcome FROM cdrs WHERE call_id = $1",
        uuid.UUID(script.call_id),
    )
    assert dict(row) == {"caller_name": "Client", "sip_status": None, "outcome": "no_answer"}

    bad_leg, far_future = CallEvent(), CallEvent()
    bad_leg.CopyFrom(script.events[0])
    bad_leg.leg = "a\x00"
    far_future.CopyFrom(script.events[0])
    far_future.occurred_at.seconds = 10**13
    for event in (bad_leg, far_future):
        with pytest.raises(InvalidCallEvent):
            await CdrIngest(api_pool).apply([event])


async def test_a_batch_with_a_poison_event_applies_nothing(api_pool: asyncpg.Pool) -> None:
    tenant = str(uuid.uuid4())
    events = missed_inbound(tenant, new_users(), DAY, "+78122222222").events
    poison = CallEvent()
    poison.CopyFrom(events[1])
    poison.call_id = "not-a-call"
    batch = [_consumed(e) for e in [*events[:3], poison, *events[3:]]]
    ingest = CdrIngest(api_pool)
    with pytest.raises(PoisonMessage):
        await ingest.handle_batch(batch)
    assert await stored(api_pool, tenant) == {}
    # What a consumer then does: event by event, the poison alone is refused.
    for item in batch:
        if item.message is poison:
            with pytest.raises(PoisonMessage):
                await ingest.handle(item)
        else:
            await ingest.handle(item)
    (cdr,) = (await stored(api_pool, tenant)).values()
    assert cdr == fold_events(events)[0]


def _consumed(event: CallEvent) -> ConsumedEvent[CallEvent]:
    return ConsumedEvent(
        topic="t",
        partition=0,
        offset=0,
        key=None,
        message=event,
        headers=(),
        event_id=event.event_id,
        consumer_group="g",
        timestamp_ms=0,
    )
