"""Publishes `callmesh.config.v1` from the transactional outbox.

Writes put a row in `config_outbox` in the same transaction as the change (see `store`). This
relay sends the rows in order and deletes them once the broker has acknowledged them, so a crash
at any point re-sends rather than loses: consumers already tolerate duplicates by `event_id`,
which is derived from the outbox row and therefore stable across re-sends. One relay at a time
publishes (an advisory lock), which keeps each tenant's changes in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg
from callmesh.events.v1 import config_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from google.protobuf.timestamp_pb2 import Timestamp

CONFIG_TOPIC = "callmesh.config.v1"
NOTIFY_CHANNEL = "callmesh_config_outbox"
EVENT_NAMESPACE = uuid.UUID("0d3c5a53-7d4f-4a8e-93a9-5b6c1a2f7e40")
_RELAY_LOCK = 0x43_4D_43_4F  # "CMCO": one config relay at a time

KINDS = {
    "tenant": config_pb2.CONFIG_KIND_TENANT,
    "user": config_pb2.CONFIG_KIND_USER,
    "number": config_pb2.CONFIG_KIND_NUMBER,
    "trunk": config_pb2.CONFIG_KIND_TRUNK,
    # The routing document holds the tenant's scenarios (and what they refer to).
    "routing_config": config_pb2.CONFIG_KIND_SCENARIO,
}


def config_event(row: Any) -> config_pb2.ConfigChanged:
    occurred = Timestamp()
    occurred.FromDatetime(row["at"])
    return config_pb2.ConfigChanged(
        event_id=str(uuid.uuid5(EVENT_NAMESPACE, f"config-outbox/{row['id']}")),
        tenant_id=str(row["tenant_id"]),
        kind=KINDS.get(row["kind"], config_pb2.CONFIG_KIND_UNSPECIFIED),
        id=row["resource_key"],
        version=row["version"],
        deleted=row["deleted"],
        occurred_at=occurred,
        changed_by=row["actor"],
        producer="api",
    )


class ConfigOutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        log: EventLogger,
        *,
        batch: int = 500,
        poll_seconds: float = 2.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.log = log
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
                    "SELECT * FROM config_outbox ORDER BY id LIMIT $1", self.batch
                )
                if not rows:
                    return sent
                for row in rows:
                    event = config_event(row)
                    await self.producer.send(
                        CONFIG_TOPIC, event, key=event.tenant_id, event_id=event.event_id
                    )
                await conn.execute(
                    "DELETE FROM config_outbox WHERE id = ANY($1::bigint[])",
                    [row["id"] for row in rows],
                )
                sent += len(rows)
                self.published += len(rows)

    async def start(self) -> None:
        self._listener = await self.pool.acquire()
        await self._listener.add_listener(NOTIFY_CHANNEL, self._notified)
        self._task = asyncio.create_task(self._run(), name="config-outbox-relay")

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
                self.log.warning("config_relay_retry", error=f"{type(exc).__name__}: {exc}")
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
