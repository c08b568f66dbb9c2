"""Publishes queue facts to `callmesh.calls.v1` from the transactional outbox.

The same pattern as the api's config relay (`callmesh_api.config_events`): the owner commits
each `CallEvent` to `call_event_outbox` in the transaction that journals the operation which
caused it (`store.QueueStore.append`), so an event exists exactly when its cause is durable.
This relay sends rows in id order, keyed by call id, and deletes them once the broker has
acknowledged them; a crash in between re-sends the same bytes with the same `event_id`, which
consumers already tolerate. One relay at a time publishes (an advisory lock), which keeps the
rows of one call in commit order across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from callmesh.events.v1 import calls_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger

from callmesh_queue.store import NOTIFY_CHANNEL

CALLS_TOPIC = "callmesh.calls.v1"
_RELAY_LOCK = 0x43_4D_51_4F  # "CMQO": one queue-event relay at a time


class CallEventOutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        log: EventLogger,
        *,
        topic: str = CALLS_TOPIC,
        batch: int = 500,
        poll_seconds: float = 2.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.log = log
        self.topic = topic
        self.batch = batch
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self.published = 0

    async def publish_pending(self) -> int:
        """Send what the outbox holds now; the number of events sent."""
        sent = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
                    return sent  # another replica's relay is at it
                rows = await conn.fetch(
                    "SELECT id, call_id, event_id, payload FROM call_event_outbox"
                    " ORDER BY id LIMIT $1",
                    self.batch,
                )
                if not rows:
                    return sent
                for row in rows:
                    event = calls_pb2.CallEvent.FromString(row["payload"])
                    await self.producer.send(
                        self.topic, event, key=row["call_id"], event_id=row["event_id"]
                    )
                await conn.execute(
                    "DELETE FROM call_event_outbox WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in rows],
                )
                sent += len(rows)
                self.published += len(rows)

    async def start(self) -> None:
        self._listener = await self.pool.acquire()
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)
        self._task = asyncio.create_task(self._run(), name="queue-event-relay")

    def _notified(self, *args: object) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.publish_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Broker or database unavailable: the rows stay; try again after the poll.
                self.log.warning("event_relay_retry", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.remove_listener(NOTIFY_CHANNEL, self._notified)
            await self.pool.release(self._listener)
            self._listener = None
