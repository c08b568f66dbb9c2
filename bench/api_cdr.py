"""api_cdr: CDR ingest throughput and report query times on the real local PostgreSQL.

Everything runs in a throw-away schema (dropped at the end) on the devstack's PostgreSQL and
Kafka (started if they are not running, stopped again only if this script started them).

Ingest: inbound calls of 8 events each (attempt, ringing, answer and end on the "a" leg and on
one b-leg) are folded through the real `CdrIngest` — raw event insert with ON CONFLICT
(call_id, leg, seq), leg and CDR upserts, one transaction each time. The first three figures
are direct (events handed to the handler as the `EventConsumer` hands them: the database side
that bounds the consumer); the last goes through Kafka.
  cdr_ingest              the consumer's path: `handle()` one event at a time, one stream
                          (one transaction and one WAL flush per event)
  cdr_ingest_concurrent   the same handler on 8 streams at once (8 partitions / consumers);
                          PostgreSQL flushes their commits together
  cdr_ingest_batched      `handle_batch()`: 100 events per transaction, as a consumer that
                          hands over each fetched batch (max_records_per_batch=100) would
  cdr_ingest_kafka        end to end through Kafka: the real `EventConsumer` on a 3-partition
                          topic with `handle_batch` per fetched batch (falling back to
                          `handle` per event), as app.py runs it
Reports: 1,000,000 CDRs of one tenant over 30 days (~33,000 calls a day: inbound 60 %,
outbound 35 %, internal 5 %; outside numbers repeat so call-backs happen) written with a
set-based INSERT ... SELECT generate_series, then the one-day queries the REST endpoints run:
  report_missed_day_ms     missed inbound calls of one day not called back (all rows)
  report_call_list_day_ms  first page (50) of one day's calls, newest first
  report_stats_day_ms      ASR/ACD/NER of one day
  report_employees_day_ms  per-employee load of one day
  report_csv_day_ms        one day's rows for the CSV export, read through the cursor
(median of 7 runs after one warm-up). Goals from issue 6: >= 5,000 events/s, < 200 ms for the
one-day missed-calls report.

Options (environment): CDR_BENCH_ROWS (default 1000000), CDR_BENCH_INGEST_CALLS (default 300).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "services/api/src"))

import asyncpg  # noqa: E402
import uvloop  # noqa: E402
from callmesh.common.v1 import common_pb2  # noqa: E402
from callmesh.events.v1 import calls_pb2  # noqa: E402
from callmesh.events.v1.calls_pb2 import CallEvent  # noqa: E402
from callmesh_api.cdr import CdrIngest  # noqa: E402
from callmesh_api.config_service import ConfigService  # noqa: E402
from callmesh_api.domain.roles import Principal, Role  # noqa: E402
from callmesh_api.reports import ReportService, parse_call_filter  # noqa: E402
from callmesh_api.store import ConfigStore  # noqa: E402
from callmesh_core.db import create_pool, migrate  # noqa: E402
from callmesh_core.kafka import (  # noqa: E402
    ConsumedEvent,
    EventConsumer,
    EventProducer,
    dlq_topic,
    ensure_topics,
)
from callmesh_core.logging import EventLogger  # noqa: E402
from callmesh_devstack.stack import Stack  # noqa: E402
from opentelemetry import trace  # noqa: E402

MIGRATIONS = ROOT / "services/api/src/callmesh_api/migrations"
ROWS = int(os.environ.get("CDR_BENCH_ROWS", "1000000"))
INGEST_CALLS = int(os.environ.get("CDR_BENCH_INGEST_CALLS", "300"))
DAYS = 30
START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
TIMEZONE = "Europe/Moscow"
USERS = 50


def call_events(tenant: str, start: dt.datetime) -> list[CallEvent]:
    call_id = str(uuid.uuid4())
    agent = str(uuid.uuid4())
    seq: dict[str, int] = {}
    events = []

    def add(leg: str, at: float, kind: str, message: Any) -> None:
        seq[leg] = seq.get(leg, 0) + 1
        event = CallEvent(
            event_id=str(uuid.uuid4()), call_id=call_id, leg=leg, seq=seq[leg], tenant_id=tenant
        )
        event.occurred_at.FromDatetime(start + dt.timedelta(seconds=at))
        getattr(event, kind).CopyFrom(message)
        events.append(event)

    inbound = common_pb2.CALL_DIRECTION_INBOUND
    add("a", 0, "attempt", calls_pb2.CallAttempt(direction=inbound, caller_number="+78121234567"))
    add("a", 0.2, "ringing", calls_pb2.CallRinging())
    add("b1", 0.3, "attempt", calls_pb2.CallAttempt(callee_user_id=agent, callee_extension="101"))
    add("b1", 1, "ringing", calls_pb2.CallRinging())
    add("b1", 6, "answered", calls_pb2.CallAnswered(answered_by_user_id=agent))
    add("a", 6, "answered", calls_pb2.CallAnswered())
    ended = calls_pb2.CallEnded(
        outcome=calls_pb2.CALL_OUTCOME_ANSWERED, hangup_side=calls_pb2.HANGUP_SIDE_CALLER
    )
    ended.talk_duration.FromSeconds(60)
    ended.total_duration.FromSeconds(66)
    add("a", 66, "ended", ended)
    add("b1", 66, "ended", ended)
    return events


def consumed(event: CallEvent) -> ConsumedEvent[CallEvent]:
    return ConsumedEvent(
        topic="callmesh.calls.v1",
        partition=0,
        offset=0,
        key=event.call_id.encode(),
        message=event,
        headers=(),
        event_id=event.event_id,
        consumer_group="api-cdr",
        timestamp_ms=0,
    )


async def ingest(pool: asyncpg.Pool, tenant: str) -> None:
    def calls(n: int) -> list[list[CallEvent]]:
        return [call_events(tenant, START + dt.timedelta(minutes=i)) for i in range(n)]

    # One stream, event by event: the consumer's own path.
    handler = CdrIngest(pool)
    events = [e for call in calls(INGEST_CALLS // 2) for e in call]
    began = time.perf_counter()
    for event in events:
        await handler.handle(consumed(event))
    rate = len(events) / (time.perf_counter() - began)
    print(f"cdr_ingest: {rate:.0f} events/s (direct, handler per event, 1 stream)", flush=True)

    # Eight streams: each call's events stay in order within its stream, as on a partition.
    streams = [[e for call in calls(INGEST_CALLS // 8) for e in call] for _ in range(8)]

    async def run(stream: list[CallEvent]) -> None:
        for event in stream:
            await handler.handle(consumed(event))

    began = time.perf_counter()
    await asyncio.gather(*(run(s) for s in streams))
    rate = sum(len(s) for s in streams) / (time.perf_counter() - began)
    print(f"cdr_ingest_concurrent: {rate:.0f} events/s (direct, handler per event, 8 streams)")

    # Batches of 100 events in one transaction each.
    events = [e for call in calls(INGEST_CALLS * 4) for e in call]
    began = time.perf_counter()
    for i in range(0, len(events), 100):
        await handler.handle_batch([consumed(e) for e in events[i : i + 100]])
    rate = len(events) / (time.perf_counter() - began)
    print(f"cdr_ingest_batched: {rate:.0f} events/s (direct, 100 events per transaction)")
    applied = await pool.fetchval("SELECT count(*) FROM call_events")
    cdrs = await pool.fetchval("SELECT count(*) FROM cdrs WHERE outcome = 'answered'")
    expected_calls = INGEST_CALLS // 2 + 8 * (INGEST_CALLS // 8) + INGEST_CALLS * 4
    assert applied == expected_calls * 8 and cdrs == expected_calls, (applied, cdrs)
    await pool.execute("TRUNCATE call_events, call_legs, cdrs")


async def ingest_kafka(pool: asyncpg.Pool, bootstrap: str, tenant: str) -> None:
    """The whole consumer path: records on a 3-partition topic, the real `EventConsumer`
    (decode, batch handler, commit) with `CdrIngest.handle_batch` and `CdrIngest.handle`, as
    app.py wires it."""
    from aiokafka.admin import AIOKafkaAdminClient

    topic = f"bench.calls.{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic], partitions=3)
    tracer = trace.get_tracer("bench")
    producer = EventProducer(bootstrap_servers=bootstrap, tracer=tracer, linger_ms=20)
    await producer.start()
    events = [
        e for i in range(INGEST_CALLS) for e in call_events(tenant, START + dt.timedelta(minutes=i))
    ]
    try:
        await asyncio.gather(
            *(producer.send(topic, e, key=e.call_id, event_id=e.event_id) for e in events)
        )
        ingest = CdrIngest(pool)
        all_handled = asyncio.Event()
        handled = 0

        def count(done: int) -> None:
            nonlocal handled
            handled += done
            if handled == len(events):
                all_handled.set()

        async def handler(event: ConsumedEvent[CallEvent]) -> None:
            await ingest.handle(event)
            count(1)

        async def batch_handler(batch: Sequence[ConsumedEvent[CallEvent]]) -> None:
            await ingest.handle_batch(batch)
            count(len(batch))

        consumer = EventConsumer(
            bootstrap_servers=bootstrap,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            topics=[topic],
            message_type=CallEvent,
            handler=handler,
            batch_handler=batch_handler,
            dlq_producer=producer,
            tracer=tracer,
            log=EventLogger(logging.getLogger("bench.api_cdr")),
        )
        began = time.perf_counter()
        await consumer.start()
        try:
            await asyncio.wait_for(all_handled.wait(), timeout=600)
            elapsed = time.perf_counter() - began
        finally:
            await consumer.stop()
        applied = await pool.fetchval("SELECT count(*) FROM call_events")
        assert applied == len(events), (applied, len(events))
    finally:
        await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic, dlq_topic(topic)])
        finally:
            await admin.close()
    rate = len(events) / elapsed
    print(
        f"cdr_ingest_kafka: {rate:.0f} events/s (through Kafka: real EventConsumer, 3 partitions,"
        " batch handler per fetch; includes joining the group)"
    )


SEED = """
INSERT INTO cdrs (call_id, tenant_id, direction, caller_number, caller_name, caller_national,
                  callee_number, remote_number, did, started_at, answered_at, ended_at, outcome,
                  ring_ms, talk_ms, total_ms, answered_by_user_id, answered_by_extension,
                  rang_extensions, rang_user_ids, party_user_ids, caller_user_id,
                  caller_extension, closed, person_answered, b_legs, a_outcome)
SELECT md5(i::text || $1::uuid::text)::uuid, $1::uuid, g.direction,
       CASE WHEN g.direction = 'inbound' THEN g.remote ELSE g.ext END, '',
       CASE WHEN g.direction = 'inbound' THEN substr(g.remote, 3) ELSE '' END,
       CASE WHEN g.direction = 'inbound' THEN '+74951112233'
            WHEN g.direction = 'outbound' THEN g.remote ELSE '1' || lpad((g.u % 50)::text, 2, '0')
       END,
       CASE WHEN g.direction = 'internal' THEN NULL ELSE g.remote END,
       CASE WHEN g.direction = 'inbound' THEN '+74951112233' END,
       g.at,
       CASE WHEN g.outcome = 'answered' THEN g.at + interval '7 seconds' END,
       g.at + make_interval(secs => 7 + g.talk / 1000.0),
       g.outcome,
       CASE WHEN g.outcome = 'answered' THEN 7000 ELSE 20000 END,
       g.talk, 7000 + g.talk,
       CASE WHEN g.outcome = 'answered' AND g.direction <> 'outbound' THEN g.user_id END,
       CASE WHEN g.outcome = 'answered' AND g.direction <> 'outbound' THEN g.ext END,
       CASE WHEN g.direction = 'outbound' THEN '{}'::text[] ELSE ARRAY[g.ext] END,
       CASE WHEN g.direction = 'outbound' THEN '{}'::uuid[] ELSE ARRAY[g.user_id] END,
       ARRAY[g.user_id],
       CASE WHEN g.direction = 'outbound' THEN g.user_id END,
       CASE WHEN g.direction = 'outbound' THEN g.ext END,
       true, g.outcome = 'answered', 1, g.outcome
FROM generate_series(1, $2::int) AS i
CROSS JOIN LATERAL (
    SELECT ((hashint4(i) & 2147483647) % 100) AS r,
           ((hashint4(i * 31 + 7) & 2147483647) % 300000) AS num,
           (i % $5::int) AS u,
           $3::timestamptz + (i::double precision / $2::int) * $4::interval AS at,
           CASE WHEN i % 20 < 12 THEN 'inbound' WHEN i % 20 < 19 THEN 'outbound'
                ELSE 'internal' END AS direction
) AS h
CROSS JOIN LATERAL (
    SELECT h.direction, h.at, h.u,
           $6::uuid[] AS users,
           ($6::uuid[])[h.u + 1] AS user_id,
           (100 + h.u)::text AS ext,
           '+7' || (CASE h.num % 3 WHEN 0 THEN '812' WHEN 1 THEN '495' ELSE '911' END)
                || lpad(h.num::text, 7, '0') AS remote,
           CASE
               WHEN h.direction = 'inbound' THEN
                   CASE WHEN h.r < 70 THEN 'answered' WHEN h.r < 85 THEN 'no_answer'
                        WHEN h.r < 90 THEN 'busy' WHEN h.r < 95 THEN 'cancelled'
                        ELSE 'abandoned' END
               WHEN h.direction = 'outbound' THEN
                   CASE WHEN h.r < 60 THEN 'answered' WHEN h.r < 85 THEN 'no_answer'
                        WHEN h.r < 95 THEN 'busy' ELSE 'failed' END
               ELSE CASE WHEN h.r < 80 THEN 'answered' ELSE 'no_answer' END
           END AS outcome,
           (hashint4(i * 17) & 2147483647) % 600000 AS talk
) AS g
"""


async def timed(run: Callable[[], Awaitable[Any]], repeats: int = 7) -> tuple[float, Any]:
    result = await run()  # warm-up (and the result to sanity-check)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        await run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


async def reports(pool: asyncpg.Pool, tenant: uuid.UUID) -> None:
    users = [uuid.uuid4() for _ in range(USERS)]
    await pool.executemany(
        "INSERT INTO users (id, tenant_id, name, role, extension, sip_realm, sip_ha1_md5,"
        " sip_ha1_sha256) VALUES ($1, $2, $3, 'agent', $4, 'bench', '-', '-')",
        [(user, tenant, f"Agent {n}", str(100 + n)) for n, user in enumerate(users)],
    )
    began = time.perf_counter()
    await pool.execute(
        SEED, tenant, ROWS, START, dt.timedelta(days=DAYS), USERS, users, timeout=900
    )
    await pool.execute("ANALYZE cdrs")
    seeded = time.perf_counter() - began
    print(f"report_seed_rows: {ROWS} rows in {seeded:.1f} s (INSERT ... SELECT generate_series)")

    service = ReportService(ConfigService(ConfigStore(pool)))
    admin = Principal(role=Role.TENANT_ADMIN, tenant_id=tenant)
    scope = await service.scope(admin, tenant)
    now = dt.datetime.now(dt.UTC)
    day = parse_call_filter({"from": "2026-10-15"}, TIMEZONE, now, allowed=("from",))

    async def missed() -> int:
        rows, _ = await service.missed(scope, day, limit=100_000, cursor=None)
        return len(rows)

    async def call_list() -> int:
        rows, _ = await service.calls(scope, day, limit=50, cursor=None)
        return len(rows)

    async def stats() -> int:
        return int((await service.stats(scope, day))["attempts"])

    async def employees() -> int:
        return len(await service.employee_load(scope, day))

    async def csv_rows() -> int:
        return len([row async for row in await service.calls_csv(scope, day)])

    ms, count = await timed(missed)
    print(f"report_missed_day_ms: {ms:.1f} ms ({count} numbers not called back)")
    ms, count = await timed(call_list)
    print(f"report_call_list_day_ms: {ms:.1f} ms (first page of {count})")
    ms, count = await timed(stats)
    print(f"report_stats_day_ms: {ms:.1f} ms ({count} calls that day)")
    ms, count = await timed(employees, repeats=3)
    print(f"report_employees_day_ms: {ms:.1f} ms ({count} employees)")
    ms, count = await timed(csv_rows, repeats=3)
    print(f"report_csv_day_ms: {ms:.1f} ms ({count} rows through the server-side cursor)")


async def main_async(dsn: str, bootstrap: str) -> None:
    schema = f"bench_cdr_{uuid.uuid4().hex[:8]}"
    await migrate(dsn, schema, MIGRATIONS)
    pool = await create_pool(dsn, schema=schema, min_size=2, max_size=10)
    try:
        tenant = uuid.uuid4()
        await pool.execute(
            "INSERT INTO tenants (id, slug, name, timezone, sip_domain)"
            " VALUES ($1, $2, $2, $3, $4)",
            tenant,
            f"bench-{tenant.hex[:8]}",
            TIMEZONE,
            f"{tenant.hex[:8]}.bench.local",
        )
        await ingest(pool, str(tenant))
        await ingest_kafka(pool, bootstrap, str(tenant))
        await pool.execute("TRUNCATE call_events, call_legs, cdrs")
        await reports(pool, tenant)
    finally:
        await pool.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


def main() -> None:
    stack = Stack.from_env()
    stack.up()
    try:
        # uvloop, as the api service runs (callmesh_core.service).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main_async(stack.postgres.dsn, stack.kafka.bootstrap))
    finally:
        stack.down(only_started=True)


if __name__ == "__main__":
    main()
