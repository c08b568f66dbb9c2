"""Call lifecycle events (attempt, ringing, answered, ended) to `callmesh.calls.v1`.

A :class:`CallEventLog` belongs to one call: it numbers each leg's events from 1 without gaps
(the edge replica that holds the call is the only producer of its SIP legs) and hands them to
the :class:`CallEventWriter`, which inserts them into ``call_outbox`` in the order they were
recorded, one batch per round trip, and wakes the `OutboxRelay` that publishes them keyed by
the platform call id. Writing never blocks the call: a database hiccup delays events, the call
goes on; the writer retries the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh_core.logging import EventLogger
from callmesh_core.outbox import OutboxEvent
from google.protobuf.duration_pb2 import Duration

CALLS_TOPIC = "callmesh.calls.v1"
CALLS_NOTIFY_CHANNEL = "sip_edge_call_outbox"
CALLS_RELAY_LOCK = 0x53_45_43_4C  # "SECL": one call-event relay at a time


def call_outbox_event(row: Any) -> OutboxEvent:
    """An outbox row as it goes to Kafka (the event id was fixed when it was written)."""
    message = calls_pb2.CallEvent.FromString(bytes(row["payload"]))
    return OutboxEvent(CALLS_TOPIC, message, row["event_key"], row["event_id"])


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(max(0, round(value * 1e9)))
    return duration


class CallEventWriter:
    """Inserts recorded events into ``call_outbox`` in order; one per replica."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        log: EventLogger,
        *,
        wake_relay: Callable[[], None],
        retry_seconds: float = 1.0,
    ) -> None:
        self._pool = pool
        self._log = log
        self._wake_relay = wake_relay
        self._retry = retry_seconds
        self._pending: list[tuple[str, str, bytes]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="call-event-writer")

    def add(self, event: calls_pb2.CallEvent) -> None:
        self._pending.append((event.call_id, event.event_id, event.SerializeToString()))
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = list(self._pending)
                try:
                    async with self._pool.acquire() as conn:
                        # unnest keeps the array order, so ids follow the recording order.
                        await conn.execute(
                            "INSERT INTO call_outbox (event_key, event_id, payload)"
                            " SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
                            [row[0] for row in batch],
                            [row[1] for row in batch],
                            [row[2] for row in batch],
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._log.warning(
                        "call_events_write_retry", error=f"{type(exc).__name__}: {exc}"
                    )
                    await asyncio.sleep(self._retry)
                    continue
                # Events recorded meanwhile were appended after the batch.
                del self._pending[: len(batch)]
                self.written += len(batch)
                self._wake_relay()
            self._idle.set()

    async def flush(self, wait: float = 5.0) -> None:
        """Wait (at most ``wait`` seconds) until everything recorded is in the outbox."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), wait)

    async def stop(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class CallEventLog:
    """The events of one call, numbered per leg."""

    def __init__(
        self,
        writer: CallEventWriter,
        *,
        call_id: str,
        tenant_id: str,
        producer: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._writer = writer
        self.call_id = call_id
        self.tenant_id = tenant_id
        self._producer = producer
        self._wall_clock = wall_clock
        self._seq: dict[str, int] = {}

    def _event(self, leg: str, sip_call_id: str) -> calls_pb2.CallEvent:
        seq = self._seq.get(leg, 0) + 1
        self._seq[leg] = seq
        event = calls_pb2.CallEvent(
            event_id=str(uuid.uuid4()),
            call_id=self.call_id,
            leg=leg,
            seq=seq,
            tenant_id=self.tenant_id,
            sip_call_id=sip_call_id,
            producer=self._producer,
        )
        event.occurred_at.FromNanoseconds(round(self._wall_clock() * 1e9))
        return event

    def attempt(self, leg: str, sip_call_id: str, attempt: calls_pb2.CallAttempt) -> None:
        event = self._event(leg, sip_call_id)
        event.attempt.CopyFrom(attempt)
        self._writer.add(event)

    def ringing(
        self, leg: str, sip_call_id: str, *, post_dial_delay: float, early_media: bool
    ) -> None:
        event = self._event(leg, sip_call_id)
        event.ringing.post_dial_delay.CopyFrom(seconds(post_dial_delay))
        event.ringing.early_media = early_media
        self._writer.add(event)

    def answered(
        self,
        leg: str,
        sip_call_id: str,
        *,
        ring_duration: float,
        bridged_with: str = "",
        user_id: str = "",
        extension: str = "",
    ) -> None:
        event = self._event(leg, sip_call_id)
        event.answered.ring_duration.CopyFrom(seconds(ring_duration))
        event.answered.bridged_with_leg = bridged_with
        event.answered.answered_by_user_id = user_id
        event.answered.answered_by_extension = extension
        self._writer.add(event)

    def ended(
        self,
        leg: str,
        sip_call_id: str,
        *,
        outcome: calls_pb2.CallOutcome.ValueType,
        cause: common_pb2.HangupCause.ValueType,
        side: calls_pb2.HangupSide.ValueType,
        sip_status: int,
        started: float,
        answered: float | None,
        first_ring: float | None,
        now: float,
    ) -> None:
        event = self._event(leg, sip_call_id)
        ended = event.ended
        ended.outcome = outcome
        ended.cause = cause
        ended.hangup_side = side
        ended.sip_status = sip_status
        ended.total_duration.CopyFrom(seconds(now - started))
        ended.ring_duration.CopyFrom(seconds((answered or now) - started))
        ended.talk_duration.CopyFrom(seconds(now - answered if answered is not None else 0.0))
        progress = [t for t in (first_ring, answered) if t is not None]
        if progress:
            ended.post_dial_delay.CopyFrom(seconds(min(progress) - started))
        self._writer.add(event)
