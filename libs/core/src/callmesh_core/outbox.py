"""Transactional outbox relay: rows written with a state change become Kafka events.

A service that must publish a fact exactly when a database change commits writes an outbox row
in the same transaction as the change (the change and the fact commit or roll back together),
then `NOTIFY`s a channel. An `OutboxRelay` sends the rows in `id` order and deletes them once the
broker has acknowledged them, so a crash at any point re-sends rather than loses. Consumers
already tolerate duplicates by event id, so each row's event id must be derived from the row
(e.g. `uuid5(namespace, f"{table}/{id}")`) and stay stable across re-sends. One relay at a time
publishes per outbox (a transaction-scoped advisory lock), which keeps each key's events in
commit order even with several replicas.

The outbox table needs a `bigserial` (or other increasing) `id` primary key; every other column
is the service's own business, turned into a message by the `to_event` function it passes in.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger

_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class OutboxEvent:
    """What one outbox row becomes on the wire."""

    topic: str
    message: Message
    key: str
    event_id: str


RowToEvent = Callable[[Any], OutboxEvent]


class OutboxRelay:
    """Publishes the rows of one outbox table; `start` it, `stop` it on shutdown."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        log: EventLogger,
        *,
        table: str,
        to_event: RowToEvent,
        lock_key: int,
        notify_channel: str | None = None,
        batch: int = 500,
        poll_seconds: float = 2.0,
    ) -> None:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"not a plain table name: {table!r}")
        self.pool = pool
        self.producer = producer
        self.log = log
        self.table = table
        self.to_event = to_event
        # One relay per outbox across replicas: the lock key names the outbox, so two outboxes
        # in one database never wait on each other.
        self.lock_key = lock_key
        self.notify_channel = notify_channel
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
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", self.lock_key):
                    return sent  # another replica's relay is at it
                rows = await conn.fetch(
                    f"SELECT * FROM {self.table} ORDER BY id LIMIT $1", self.batch
                )
                if not rows:
                    return sent
                for row in rows:
                    event = self.to_event(row)
                    await self.producer.send(
                        event.topic, event.message, key=event.key, event_id=event.event_id
                    )
                await conn.execute(
                    f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in rows],
                )
                sent += len(rows)
                self.published += len(rows)

    def wake(self) -> None:
        """Publish soon (for writers in this process that do not NOTIFY)."""
        self._wake.set()

    async def start(self) -> None:
        if self.notify_channel is not None:
            self._listener = await self.pool.acquire()
            await self._listener.add_listener(self.notify_channel, self._notified)
        self._task = asyncio.create_task(self._run(), name=f"{self.table}-relay")

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
                self.log.warning(
                    "outbox_relay_retry", table=self.table, error=f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(self.poll_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            if self.notify_channel is not None:
                with contextlib.suppress(Exception):
                    await self._listener.remove_listener(self.notify_channel, self._notified)
            await self.pool.release(self._listener)
            self._listener = None
