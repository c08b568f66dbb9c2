"""Call detail records from `callmesh.calls.v1`: a pure fold and its PostgreSQL adapter.

The fold (`fold_event`) is a pure function: the current leg and call records and one
`CallEvent` in, the new records out — no clock, no I/O. It is written so that the order of
events *across* legs does not matter for the result (the call's outcome and durations are
derived from stored inputs each time), and it creates a record for a leg whose attempt never
arrived, filling what the events it has say.

Outcome of a call (`derive`): still `in_progress` until its "a" leg ends; `answered` when a
platform leg (an extension, a mobile, the far end of an outbound call) or a queue agent
answered; `abandoned` when the caller hung up in a queue; otherwise the "a" leg's own outcome —
except that an "a" leg the platform answered (IVR, music) while it rang people or queued the
caller who then never got anyone counts as `no_answer`/`cancelled`/`abandoned`, not as
answered. A call served by the platform alone (announcement, IVR, voicemail) is `answered`.

`CdrIngest` applies events in one transaction per batch (a batch of one for the Kafka handler):
the raw event is inserted with ON CONFLICT (call_id, leg, seq) DO NOTHING, and only events that
were really new are folded into their leg and call rows. The consumer commits its offset after
the transaction, so a redelivery or a restart finds the raw row and changes nothing, and a crash
before the commit replays the event into a database that never saw it: no duplicate, no loss.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import phonenumbers
from callmesh.common.v1 import common_pb2
from callmesh.events.v1 import calls_pb2
from callmesh.events.v1.calls_pb2 import CallEvent
from callmesh_core.kafka import ConsumedEvent, PoisonMessage
from google.protobuf.duration_pb2 import Duration

A_LEG = "a"
QUEUE_LEG = "queue"
# The call outcomes reports see. 'missed' in filters means every inbound call not answered.
ANSWERED = "answered"
IN_PROGRESS = "in_progress"
OUTCOMES = ("answered", "no_answer", "busy", "cancelled", "rejected", "failed", "abandoned")
NOT_ANSWERED = tuple(o for o in OUTCOMES if o != ANSWERED)


class InvalidCallEvent(ValueError):
    """The event can never be applied (no call id, tenant, leg, seq, kind or time)."""


def _enum_text(enum: Any, value: int, prefix: str) -> str | None:
    """`HANGUP_CAUSE_USER_BUSY` -> `user_busy`; None for UNSPECIFIED and unknown values."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return None
    text = name.removeprefix(prefix).lower()
    return None if text == "unspecified" else text


def _ms(duration: Duration) -> int:
    return duration.seconds * 1000 + duration.nanos // 1_000_000


def _optional_uuid(text: str) -> uuid.UUID | None:
    """Ids the CDR only records: a malformed one is dropped rather than failing the event."""
    if not text:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _append(values: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
    """A set kept as a sorted tuple: the result does not depend on arrival order."""
    return values if value is None or value in values else tuple(sorted((*values, value)))


def _clean(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL; a producer bug must not make an event unstorable."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    return value


def _status(value: int, low: int, high: int) -> int | None:
    return value if low <= value <= high else None


def _min(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None else min(a, b)


# -- numbers -----------------------------------------------------------------------------------
def e164(number: str, region: str | None) -> str | None:
    """The number in E.164 if it is a possible phone number (extensions are not)."""
    if not number or len(number) < 5:
        return None
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def national_digits(number: str, region: str | None) -> str:
    """The national significant number ("8121234567" for "+78121234567" or, in RU, for
    "88121234567"), so a region prefix like 812 matches however the number was presented."""
    normalised = e164(number, region)
    if normalised is None:
        return ""
    return str(phonenumbers.parse(normalised, None).national_number)


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventKey:
    call_id: uuid.UUID
    leg: str
    seq: int
    tenant_id: uuid.UUID
    kind: str
    occurred_at: dt.datetime
    event_id: str


def event_key(event: CallEvent) -> EventKey:
    """Check that `event` can be applied at all and return what identifies it."""
    try:
        call_id = uuid.UUID(event.call_id)
    except ValueError:
        raise InvalidCallEvent(f"call_id {event.call_id!r} is not a UUID") from None
    try:
        tenant_id = uuid.UUID(event.tenant_id)
    except ValueError:
        raise InvalidCallEvent(f"tenant_id {event.tenant_id!r} is not a UUID") from None
    if not event.leg or "\x00" in event.leg:
        raise InvalidCallEvent("the event names no usable leg")
    if event.seq < 1:
        raise InvalidCallEvent("seq starts at 1")
    kind = event.WhichOneof("kind")
    if kind is None:
        raise InvalidCallEvent("the event carries no fact (kind is empty)")
    if not event.HasField("occurred_at"):
        raise InvalidCallEvent("occurred_at is missing")
    try:
        occurred_at = event.occurred_at.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        raise InvalidCallEvent("occurred_at is out of range") from None
    event_id = _clean(event.event_id) or f"{call_id}:{event.leg}:{event.seq}"
    return EventKey(call_id, event.leg, event.seq, tenant_id, kind, occurred_at, event_id)


@dataclass(frozen=True)
class LegRecord:
    """One leg as its events describe it (a row of `call_legs`)."""

    call_id: uuid.UUID
    leg: str
    tenant_id: uuid.UUID
    parent_leg: str | None = None
    sip_call_id: str | None = None
    direction: str | None = None
    caller_number: str | None = None
    callee_number: str | None = None
    callee_extension: str | None = None
    caller_user_id: uuid.UUID | None = None
    callee_user_id: uuid.UUID | None = None
    trunk_id: uuid.UUID | None = None
    step_id: str | None = None
    started_at: dt.datetime | None = None
    ringing_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    answered_by_user_id: uuid.UUID | None = None
    answered_by_extension: str | None = None
    bridged_with_leg: str | None = None
    outcome: str | None = None
    cause: str | None = None
    sip_status: int | None = None
    q850_cause: int | None = None
    hangup_side: str | None = None
    ring_ms: int | None = None
    talk_ms: int | None = None
    total_ms: int | None = None
    post_dial_delay_ms: int | None = None
    mos: float | None = None
    queue_id: str | None = None
    queue_result: str | None = None
    queue_wait_ms: int | None = None
    last_seq: int = 0


@dataclass(frozen=True)
class CallRecord:
    """One call: the CDR (a row of `cdrs`). Derived columns are recomputed on every fold."""

    call_id: uuid.UUID
    tenant_id: uuid.UUID
    direction: str = "unknown"
    caller_number: str = ""
    caller_name: str = ""
    caller_national: str = ""
    callee_number: str = ""
    remote_number: str | None = None
    did: str | None = None
    trunk_id: uuid.UUID | None = None
    caller_user_id: uuid.UUID | None = None
    caller_extension: str | None = None
    started_at: dt.datetime | None = None
    answered_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    outcome: str = IN_PROGRESS
    cause: str | None = None
    sip_status: int | None = None
    hangup_side: str | None = None
    ring_ms: int | None = None
    talk_ms: int | None = None
    total_ms: int | None = None
    post_dial_delay_ms: int | None = None
    answered_by_user_id: uuid.UUID | None = None
    answered_by_extension: str | None = None
    rang_extensions: tuple[str, ...] = ()
    rang_user_ids: tuple[uuid.UUID, ...] = ()
    party_user_ids: tuple[uuid.UUID, ...] = ()
    queue_id: str | None = None
    queue_result: str | None = None
    queue_wait_ms: int | None = None
    mos: float | None = None
    # Inputs of the derived columns.
    a_outcome: str | None = None
    a_answered_at: dt.datetime | None = None
    b_answered_at: dt.datetime | None = None
    a_talk_ms: int | None = None
    b_talk_ms: int | None = None
    b_legs: int = 0
    person_answered: bool = False
    closed: bool = False


LEG_COLUMNS = tuple(f.name for f in dataclasses.fields(LegRecord))
CALL_COLUMNS = tuple(f.name for f in dataclasses.fields(CallRecord))
_ARRAY_COLUMNS = ("rang_extensions", "rang_user_ids", "party_user_ids")


def leg_from_row(row: Any) -> LegRecord:
    return LegRecord(**{name: row[name] for name in LEG_COLUMNS})


def call_from_row(row: Any) -> CallRecord:
    values = {name: row[name] for name in CALL_COLUMNS}
    for name in _ARRAY_COLUMNS:
        values[name] = tuple(values[name] or ())
    return CallRecord(**values)


# -- the fold ----------------------------------------------------------------------------------
def fold_leg(leg: LegRecord | None, event: CallEvent, key: EventKey) -> LegRecord:
    """`leg` with `event` applied (a new record when the leg was unknown)."""
    record = leg or LegRecord(call_id=key.call_id, leg=key.leg, tenant_id=key.tenant_id)
    at = key.occurred_at
    changes: dict[str, Any] = {
        "last_seq": max(record.last_seq, key.seq),
        # A leg whose attempt was lost still gets the earliest time anything was known.
        "started_at": _min(record.started_at, at),
    }
    if event.sip_call_id:
        changes["sip_call_id"] = event.sip_call_id
    kind = key.kind
    if kind == "attempt":
        attempt = event.attempt
        changes.update(
            started_at=at,
            direction=_enum_text(common_pb2.CallDirection, attempt.direction, "CALL_DIRECTION_"),
            caller_number=attempt.caller_number or None,
            callee_number=attempt.callee_number or None,
            callee_extension=attempt.callee_extension or None,
            caller_user_id=_optional_uuid(attempt.caller_user_id),
            callee_user_id=_optional_uuid(attempt.callee_user_id),
            trunk_id=_optional_uuid(attempt.trunk_id),
            parent_leg=attempt.parent_leg or None,
            step_id=attempt.step_id or None,
        )
    elif kind == "ringing":
        changes["ringing_at"] = _min(record.ringing_at, at)
        if event.ringing.HasField("post_dial_delay"):
            changes["post_dial_delay_ms"] = _ms(event.ringing.post_dial_delay)
    elif kind == "answered":
        answered = event.answered
        changes.update(
            answered_at=_min(record.answered_at, at),
            answered_by_user_id=_optional_uuid(answered.answered_by_user_id)
            or record.answered_by_user_id,
            answered_by_extension=answered.answered_by_extension or record.answered_by_extension,
            bridged_with_leg=answered.bridged_with_leg or record.bridged_with_leg,
        )
        if answered.HasField("ring_duration"):
            changes["ring_ms"] = _ms(answered.ring_duration)
    elif kind == "ended":
        ended = event.ended
        changes.update(
            ended_at=at,
            outcome=_enum_text(calls_pb2.CallOutcome, ended.outcome, "CALL_OUTCOME_"),
            cause=_enum_text(common_pb2.HangupCause, ended.cause, "HANGUP_CAUSE_"),
            sip_status=_status(ended.sip_status, 100, 699),
            q850_cause=_status(ended.q850_cause, 1, 127),
            hangup_side=_enum_text(calls_pb2.HangupSide, ended.hangup_side, "HANGUP_SIDE_"),
            total_ms=_ms(ended.total_duration),
            ring_ms=_ms(ended.ring_duration),
            talk_ms=_ms(ended.talk_duration),
        )
        if ended.HasField("post_dial_delay"):
            changes["post_dial_delay_ms"] = _ms(ended.post_dial_delay)
        if ended.HasField("quality") and ended.quality.mos > 0:
            changes["mos"] = ended.quality.mos
    elif kind == "queue_joined":
        changes["queue_id"] = event.queue_joined.queue_id or record.queue_id
    elif kind in ("queue_left", "queue_abandoned", "queue_answered", "queue_callback_requested"):
        fact = getattr(event, kind)
        changes.update(
            queue_id=fact.queue_id or record.queue_id,
            queue_result={
                "queue_left": "left",
                "queue_abandoned": "abandoned",
                "queue_answered": "answered",
                "queue_callback_requested": "callback",
            }[kind],
            queue_wait_ms=_ms(fact.waited),
        )
        if kind == "queue_answered":
            changes["answered_by_user_id"] = _optional_uuid(event.queue_answered.agent_user_id)
            changes["answered_at"] = _min(record.answered_at, at)
    # transferred and survey_answered leave the leg as it is (the raw event keeps them).
    return dataclasses.replace(record, **changes)


def fold_call(
    call: CallRecord | None, leg: LegRecord, event: CallEvent, key: EventKey, region: str | None
) -> CallRecord:
    """`call` with `event` applied, given the event's leg *after* the fold (`fold_leg`).

    `region` (the tenant's default region) reads numbers written nationally.
    """
    record = call or CallRecord(call_id=key.call_id, tenant_id=key.tenant_id)
    kind = key.kind
    changes: dict[str, Any] = {"started_at": _min(record.started_at, key.occurred_at)}
    if kind.startswith("queue_"):  # the queue reports on a leg of its own ("queue")
        if leg.queue_id:
            changes["queue_id"] = leg.queue_id
        if leg.queue_result:
            changes["queue_result"] = leg.queue_result
            changes["queue_wait_ms"] = leg.queue_wait_ms
        if kind == "queue_answered" and leg.answered_by_user_id is not None:
            changes.update(
                person_answered=True,
                b_answered_at=_min(record.b_answered_at, leg.answered_at),
                answered_by_user_id=record.answered_by_user_id or leg.answered_by_user_id,
                party_user_ids=_append(record.party_user_ids, leg.answered_by_user_id),
            )
    elif key.leg == A_LEG:
        if kind == "attempt":
            attempt = event.attempt
            direction = leg.direction or "unknown"
            caller_user = leg.caller_user_id
            remote = None
            if direction == "inbound":
                remote = e164(attempt.caller_number, region)
            elif direction == "outbound":
                remote = e164(attempt.callee_number, region)
            changes.update(
                started_at=key.occurred_at,
                direction=direction,
                caller_number=attempt.caller_number,
                caller_name=attempt.caller_name,
                caller_national=national_digits(attempt.caller_number, region),
                callee_number=attempt.callee_number,
                remote_number=remote,
                did=attempt.did or None,
                trunk_id=leg.trunk_id or record.trunk_id,
                caller_user_id=caller_user,
                caller_extension=attempt.caller_number if caller_user else None,
                party_user_ids=_append(record.party_user_ids, caller_user),
            )
        elif kind == "answered":
            changes["a_answered_at"] = leg.answered_at
        elif kind == "ended":
            changes.update(
                closed=True,
                ended_at=leg.ended_at,
                a_outcome=leg.outcome,
                cause=leg.cause,
                sip_status=leg.sip_status,
                hangup_side=leg.hangup_side,
                total_ms=leg.total_ms,
                a_talk_ms=leg.talk_ms,
            )
        if kind in ("ringing", "ended") and leg.post_dial_delay_ms is not None:
            changes["post_dial_delay_ms"] = leg.post_dial_delay_ms
    elif key.leg != QUEUE_LEG:  # a leg the platform created: an extension, a mobile, a trunk
        if kind == "attempt":
            changes.update(
                b_legs=record.b_legs + 1,
                rang_extensions=_append(record.rang_extensions, leg.callee_extension),
                rang_user_ids=_append(record.rang_user_ids, leg.callee_user_id),
                party_user_ids=_append(record.party_user_ids, leg.callee_user_id),
                trunk_id=record.trunk_id or leg.trunk_id,
            )
        elif kind == "answered":
            changes.update(
                person_answered=True,
                b_answered_at=_min(record.b_answered_at, leg.answered_at),
                answered_by_user_id=record.answered_by_user_id or leg.answered_by_user_id,
                answered_by_extension=record.answered_by_extension or leg.answered_by_extension,
                rang_extensions=_append(record.rang_extensions, leg.answered_by_extension),
                party_user_ids=_append(record.party_user_ids, leg.answered_by_user_id),
            )
        elif kind == "ended" and leg.answered_at is not None and leg.talk_ms is not None:
            # Talk of every answered platform leg: a transferred call talks on several.
            changes["b_talk_ms"] = (record.b_talk_ms or 0) + leg.talk_ms
        if kind == "ended" and leg.mos is not None:
            changes["mos"] = _min(record.mos, leg.mos)
    if key.leg == A_LEG and kind == "ended" and leg.mos is not None:
        changes["mos"] = _min(record.mos, leg.mos)
    return derive(dataclasses.replace(record, **changes))


def derive(call: CallRecord) -> CallRecord:
    """Recompute the outcome and the call-level durations from the stored inputs."""
    answered_at = call.b_answered_at if call.person_answered else call.a_answered_at
    outcome = _outcome(call)
    talk: int | None
    if call.person_answered:
        talk = call.b_talk_ms
        if talk is None and call.closed and answered_at and call.ended_at:
            talk = _between(answered_at, call.ended_at)
    else:
        talk = call.a_talk_ms if outcome == ANSWERED else 0 if call.closed else None
    ring: int | None = None
    if answered_at is not None and call.started_at is not None and outcome == ANSWERED:
        ring = _between(call.started_at, answered_at)
    elif call.closed:
        ring = call.total_ms
    total = call.total_ms
    if total is None and call.closed and call.started_at and call.ended_at:
        total = _between(call.started_at, call.ended_at)
    return dataclasses.replace(
        call,
        outcome=outcome,
        answered_at=answered_at if outcome == ANSWERED else None,
        talk_ms=talk,
        ring_ms=ring,
        total_ms=total,
    )


def _between(start: dt.datetime, end: dt.datetime) -> int:
    return max(0, int((end - start).total_seconds() * 1000))


def _outcome(call: CallRecord) -> str:
    if not call.closed:
        return IN_PROGRESS
    if call.person_answered:
        return ANSWERED
    if call.queue_result == "abandoned":
        return "abandoned"
    a = call.a_outcome
    if a == ANSWERED:
        # The platform answered (IVR, queue music) but no person did: for a call that rang
        # someone or waited in a queue that is a missed call, not a served one.
        if call.queue_id is not None:
            return "abandoned"
        if call.b_legs > 0:
            return "cancelled" if call.hangup_side == "caller" else "no_answer"
        return ANSWERED  # served by the platform alone (announcement, IVR, voicemail)
    return a or "failed"


def fold_event(
    call: CallRecord | None,
    leg: LegRecord | None,
    event: CallEvent,
    region: str | None = None,
) -> tuple[CallRecord, LegRecord]:
    """Apply one event to its call and leg records (pure; see the module docstring)."""
    key = event_key(event)
    new_leg = fold_leg(leg, event, key)
    return fold_call(call, new_leg, event, key, region), new_leg


def fold_events(events: Iterable[CallEvent], region: str | None = None) -> list[CallRecord]:
    """Fold whole sequences in memory (each event once, in order): the CDRs they produce."""
    calls: dict[uuid.UUID, CallRecord] = {}
    legs: dict[tuple[uuid.UUID, str], LegRecord] = {}
    seen: set[tuple[uuid.UUID, str, int]] = set()
    for event in events:
        key = event_key(event)
        if (key.call_id, key.leg, key.seq) in seen:
            continue
        seen.add((key.call_id, key.leg, key.seq))
        call, leg = fold_event(
            calls.get(key.call_id), legs.get((key.call_id, key.leg)), event, region
        )
        calls[key.call_id], legs[(key.call_id, key.leg)] = call, leg
    return list(calls.values())


# -- the PostgreSQL adapter -------------------------------------------------------------------
def _upsert_sql(table: str, columns: Sequence[str], conflict: str) -> str:
    names = ", ".join(columns)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    keys = {c.strip() for c in conflict.split(",")}
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table} ({names}) VALUES ({values}) "
        f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}, updated_at = now()"
    )


UPSERT_LEG = _upsert_sql("call_legs", LEG_COLUMNS, "call_id, leg")
UPSERT_CALL = _upsert_sql("cdrs", CALL_COLUMNS, "call_id")
INSERT_EVENTS = (
    "INSERT INTO call_events (call_id, leg, seq, event_id, tenant_id, kind, occurred_at, payload)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::uuid[],"
    " $6::text[], $7::timestamptz[], $8::bytea[])"
    " ON CONFLICT (call_id, leg, seq) DO NOTHING RETURNING call_id, leg, seq"
)


def leg_values(leg: LegRecord) -> tuple[Any, ...]:
    return tuple(_clean(getattr(leg, name)) for name in LEG_COLUMNS)


def call_values(call: CallRecord) -> tuple[Any, ...]:
    return tuple(_clean(getattr(call, name)) for name in CALL_COLUMNS)


async def write_cdrs(conn: asyncpg.Connection, calls: Iterable[CallRecord]) -> None:
    """Upsert finished records (used by report fixtures and the benchmark's seed)."""
    await conn.executemany(UPSERT_CALL, [call_values(c) for c in calls])


async def _write(conn: asyncpg.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:  # the common case (one event per transaction): the plain protocol path
        await conn.execute(sql, *rows[0])
    else:
        await conn.executemany(sql, rows)


class CdrIngest:
    """Folds call events into `call_events`, `call_legs` and `cdrs` (schema on the pool's path)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # The tenant's default region reads national numbers; tenants rarely change it and a
        # stale value only affects how a number is normalised, so it is kept for the process.
        self._regions: dict[uuid.UUID, str | None] = {}

    async def handle(self, consumed: ConsumedEvent[CallEvent]) -> None:
        """The `EventConsumer` handler: one event, one transaction."""
        try:
            await self.apply([consumed.message])
        except InvalidCallEvent as exc:
            raise PoisonMessage(str(exc)) from exc

    async def handle_batch(self, consumed: Sequence[ConsumedEvent[CallEvent]]) -> None:
        """All events of one fetched batch in one transaction (one WAL flush instead of one per
        event: over 10x the throughput of `handle`, see bench/api_cdr.py). Ready for a consumer
        loop that hands over batches; when it raises, nothing was applied and the caller falls
        back to `handle` per event, which isolates a poison record."""
        try:
            await self.apply([event.message for event in consumed])
        except InvalidCallEvent as exc:
            raise PoisonMessage(str(exc)) from exc

    async def apply(self, events: Sequence[CallEvent]) -> int:
        """Apply `events` (in order) in one transaction; returns how many were new."""
        keyed = [(event_key(event), event) for event in events]
        if not keyed:
            return 0
        call_ids = sorted({key.call_id for key, _ in keyed})
        async with self.pool.acquire() as conn, conn.transaction():
            # Serialise work on the same calls (two consumers briefly sharing a partition during
            # a rebalance): lock in a fixed order, so two batches never deadlock.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(c::text, 0))"
                " FROM unnest($1::uuid[]) AS c ORDER BY c",
                call_ids,
            )
            inserted = await conn.fetch(
                INSERT_EVENTS,
                [k.call_id for k, _ in keyed],
                [k.leg for k, _ in keyed],
                [k.seq for k, _ in keyed],
                [k.event_id for k, _ in keyed],
                [k.tenant_id for k, _ in keyed],
                [k.kind for k, _ in keyed],
                [k.occurred_at for k, _ in keyed],
                [e.SerializeToString() for _, e in keyed],
            )
            new = {(r["call_id"], r["leg"], r["seq"]) for r in inserted}
            fresh: list[tuple[EventKey, CallEvent]] = []
            for key, event in keyed:
                ident = (key.call_id, key.leg, key.seq)
                if ident in new:  # a duplicate inside the batch is applied once
                    new.discard(ident)
                    fresh.append((key, event))
            if not fresh:
                return 0
            touched = sorted({key.call_id for key, _ in fresh})
            calls = {
                row["call_id"]: call_from_row(row)
                for row in await conn.fetch(
                    f"SELECT {', '.join(CALL_COLUMNS)} FROM cdrs WHERE call_id = ANY($1::uuid[])",
                    touched,
                )
            }
            legs = {
                (row["call_id"], row["leg"]): leg_from_row(row)
                for row in await conn.fetch(
                    f"SELECT {', '.join(LEG_COLUMNS)} FROM call_legs"
                    " WHERE call_id = ANY($1::uuid[])",
                    touched,
                )
            }
            changed_legs: dict[tuple[uuid.UUID, str], LegRecord] = {}
            for key, event in fresh:
                region = await self._region(conn, key.tenant_id)
                leg = fold_leg(legs.get((key.call_id, key.leg)), event, key)
                call = fold_call(calls.get(key.call_id), leg, event, key, region)
                legs[(key.call_id, key.leg)] = changed_legs[(key.call_id, key.leg)] = leg
                calls[key.call_id] = call
            await _write(conn, UPSERT_LEG, [leg_values(leg) for leg in changed_legs.values()])
            await _write(conn, UPSERT_CALL, [call_values(calls[c]) for c in touched])
        return len(fresh)

    async def _region(self, conn: asyncpg.Connection, tenant_id: uuid.UUID) -> str | None:
        if tenant_id not in self._regions:
            region = await conn.fetchval(
                "SELECT default_region FROM tenants WHERE id = $1", tenant_id
            )
            if region is None:
                return None  # not (yet) a tenant here: ask again next time
            self._regions[tenant_id] = region
        return self._regions[tenant_id]
