"""Publishes queue facts to `callmesh.calls.v1` from the transactional outbox.

The owner commits each `CallEvent` to `call_event_outbox` in the transaction that journals the
operation which caused it (`store.QueueStore.append`), so an event exists exactly when its cause
is durable. The shared relay (`callmesh_core.outbox.OutboxRelay`) sends the rows in id order,
keyed by call id, and deletes them once the broker has acknowledged them; a crash in between
re-sends the same bytes with the same `event_id`, which consumers already tolerate.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from callmesh.events.v1 import calls_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxEvent, OutboxRelay

from callmesh_queue.store import NOTIFY_CHANNEL

CALLS_TOPIC = "callmesh.calls.v1"
_RELAY_LOCK = 0x43_4D_51_4F  # "CMQO": one queue-event relay at a time


class CallEventOutboxRelay(OutboxRelay):
    """The shared relay over `call_event_outbox` (rows hold the serialised CallEvent)."""

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
        def to_event(row: Any) -> OutboxEvent:
            event = calls_pb2.CallEvent.FromString(row["payload"])
            return OutboxEvent(topic, event, row["call_id"], row["event_id"])

        super().__init__(
            pool,
            producer,
            log,
            table="call_event_outbox",
            to_event=to_event,
            lock_key=_RELAY_LOCK,
            notify_channel=NOTIFY_CHANNEL,
            batch=batch,
            poll_seconds=poll_seconds,
        )
