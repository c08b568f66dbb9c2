"""Publishes `callmesh.config.v1` from the transactional outbox.

Writes put a row in `config_outbox` in the same transaction as the change (see `store`). The
relay (the generic `callmesh_core.outbox.OutboxRelay`) sends the rows in order and deletes them
once the broker has acknowledged them, so a crash at any point re-sends rather than loses:
consumers already tolerate duplicates by `event_id`, which is derived from the outbox row and
therefore stable across re-sends. One relay at a time publishes (an advisory lock), which keeps
each tenant's changes in commit order.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from callmesh.events.v1 import config_pb2
from callmesh_core.kafka import EventProducer
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxEvent, OutboxRelay
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


def config_outbox_event(row: Any) -> OutboxEvent:
    event = config_event(row)
    return OutboxEvent(CONFIG_TOPIC, event, event.tenant_id, event.event_id)


class ConfigOutboxRelay(OutboxRelay):
    """The generic relay (`callmesh_core.outbox`) over `config_outbox`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: EventProducer,
        log: EventLogger,
        *,
        batch: int = 500,
        poll_seconds: float = 2.0,
    ) -> None:
        super().__init__(
            pool,
            producer,
            log,
            table="config_outbox",
            to_event=config_outbox_event,
            lock_key=_RELAY_LOCK,
            notify_channel=NOTIFY_CHANNEL,
            batch=batch,
            poll_seconds=poll_seconds,
        )
