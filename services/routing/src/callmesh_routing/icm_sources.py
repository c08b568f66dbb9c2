"""ICM sources for the engine: routing's own contact history (PostgreSQL) and the CRM.

The engine decides from memory, so both are asked *before* it runs, concurrently and each with
a short deadline, and their answers go in as `PrefetchedSource`s. A source that fails or is
late is left out (the reason says nothing about it, the log does): ICM is a nicety, the call
must still be routed.

History is written by `ContactHistory.handle`, the consumer of `callmesh.calls.v1`:
  * the "a" leg's CallAttempt says who the outside party is (inbound: the caller; outbound:
    the dialled number, or a trunk b-leg's number when the user dialled a national form) and,
    for outbound calls, which employee placed it;
  * a CallAnswered on another leg is a conversation: inbound, with the employee who answered
    (answered_by_extension); outbound, with the employee who called;
  * the "a" leg's CallEnded forgets the call's parties (the contacts stay); parties of calls
    whose end never came are swept after two days (of event time).
Every write is idempotent (primary keys, ON CONFLICT), so redelivered events change nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from callmesh.common.v1 import common_pb2
from callmesh.crm.v1 import crm_pb2, crm_pb2_grpc
from callmesh.events.v1 import calls_pb2
from callmesh_core.kafka import ConsumedEvent
from callmesh_core.logging import EventLogger

from callmesh_routing.core.icm import IcmCandidate, IcmSource, PrefetchedSource

HISTORY_SOURCE = "history"
# Only the most recent conversations matter to ICM (the core keeps 8 per caller, too).
HISTORY_LIMIT = 8
FIRST_LEG = "a"
# Parties of calls still open after this long are dropped (their end was lost); no call lasts
# that long, and the sweep runs at most once per SWEEP_EVERY of event time.
OPEN_CALL_LIMIT = timedelta(days=2)
SWEEP_EVERY = timedelta(minutes=10)


def _is_e164(number: str) -> bool:
    return number.startswith("+") and number[1:].isdigit() and len(number) > 4


class ContactHistory:
    """Routing's ICM history in its own schema (see migrations/0001_icm_history.sql)."""

    def __init__(self, pool: asyncpg.Pool, timeout_seconds: float) -> None:
        self._pool = pool
        self._timeout = timeout_seconds
        self._next_sweep: datetime | None = None

    async def handle(self, event: ConsumedEvent[calls_pb2.CallEvent]) -> None:
        """Kafka handler for `callmesh.calls.v1`."""
        call = event.message
        kind = call.WhichOneof("kind")
        if kind == "attempt":
            await self._attempt(call)
        elif kind == "answered" and call.leg != FIRST_LEG:
            await self._answered(call)
        elif kind == "ended" and call.leg == FIRST_LEG:
            await self._pool.execute("DELETE FROM icm_calls WHERE call_id = $1", call.call_id)
            await self._sweep(call.occurred_at.ToDatetime(UTC))

    async def _sweep(self, now: datetime) -> None:
        # Event time, not the clock: replaying old events sweeps relative to their own era.
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY
        await self._pool.execute(
            "DELETE FROM icm_calls WHERE started_at < $1", now - OPEN_CALL_LIMIT
        )

    async def _attempt(self, call: calls_pb2.CallEvent) -> None:
        attempt = call.attempt
        started = call.occurred_at.ToDatetime(UTC)
        if call.leg == FIRST_LEG:
            if attempt.direction == common_pb2.CALL_DIRECTION_INBOUND:
                external, user, extension = attempt.caller_number, "", ""
            elif attempt.direction == common_pb2.CALL_DIRECTION_OUTBOUND:
                external = attempt.callee_number
                user = attempt.caller_user_id
                # An internal caller is presented by extension, an outside form is not one.
                extension = "" if _is_e164(attempt.caller_number) else attempt.caller_number
            else:
                return  # internal calls have no outside party
            await self._pool.execute(
                """
                INSERT INTO icm_calls (call_id, tenant_id, direction, external_number,
                                       employee_user_id, employee_extension, started_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (call_id) DO NOTHING
                """,
                call.call_id,
                call.tenant_id,
                attempt.direction,
                external if _is_e164(external) else "",
                user,
                extension,
                started,
            )
        elif attempt.trunk_id and _is_e164(attempt.callee_number):
            # A b-leg out through a trunk names the outside number in E.164 even when the
            # user dialled "8 812 ..." on the "a" leg.
            await self._pool.execute(
                """
                UPDATE icm_calls SET external_number = $2
                WHERE call_id = $1 AND external_number = '' AND direction = $3
                """,
                call.call_id,
                attempt.callee_number,
                common_pb2.CALL_DIRECTION_OUTBOUND,
            )

    async def _answered(self, call: calls_pb2.CallEvent) -> None:
        parties = await self._pool.fetchrow(
            "SELECT * FROM icm_calls WHERE call_id = $1", call.call_id
        )
        if parties is None or not parties["external_number"]:
            return  # internal call, or the outside party is unknown
        if parties["direction"] == common_pb2.CALL_DIRECTION_INBOUND:
            user = call.answered.answered_by_user_id
            extension = call.answered.answered_by_extension
        else:
            user, extension = parties["employee_user_id"], parties["employee_extension"]
        if not extension:
            return  # ICM rings extensions: an answer by nobody in particular is no contact
        await self._pool.execute(
            """
            INSERT INTO icm_contacts (call_id, leg, seq, tenant_id, external_number,
                                      employee_user_id, employee_extension, talked_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (call_id, leg, seq) DO NOTHING
            """,
            call.call_id,
            call.leg,
            call.seq,
            parties["tenant_id"],
            parties["external_number"],
            user,
            extension,
            call.occurred_at.ToDatetime(UTC),
        )

    async def candidates(
        self, tenant_id: str, caller: str, since: datetime
    ) -> tuple[IcmCandidate, ...]:
        """The caller's most recent conversations since `since`, newest first."""
        # The deadline covers waiting for a pooled connection too, not only the query.
        async with asyncio.timeout(self._timeout):
            rows = await self._pool.fetch(
                """
                SELECT employee_extension, talked_at FROM icm_contacts
                WHERE tenant_id = $1 AND external_number = $2 AND talked_at >= $3
                ORDER BY talked_at DESC LIMIT $4
                """,
                tenant_id,
                caller,
                since,
                HISTORY_LIMIT,
            )
        return tuple(
            IcmCandidate(row["employee_extension"], row["talked_at"], HISTORY_SOURCE)
            for row in rows
        )


class CrmResponsible:
    """The CRM's responsible manager through crm-sync's `Crm.LookupResponsible`."""

    def __init__(self, channel: grpc.aio.Channel, timeout_seconds: float) -> None:
        self._stub = crm_pb2_grpc.CrmStub(channel)
        self._timeout = timeout_seconds

    async def candidates(
        self, tenant_id: str, caller: str, call_id: str, now: datetime
    ) -> tuple[IcmCandidate, ...]:
        reply = await self._stub.LookupResponsible(
            crm_pb2.LookupResponsibleRequest(
                tenant_id=tenant_id, caller_number=caller, call_id=call_id
            ),
            timeout=self._timeout,
        )
        if not reply.HasField("responsible") or not reply.responsible.extension:
            return ()
        # The CRM assigns a manager whether or not they talked lately; without a date the
        # assignment counts as current, so the ICM window does not discard it.
        talked_at = (
            reply.last_interaction_at.ToDatetime(UTC)
            if reply.HasField("last_interaction_at")
            else now
        )
        source = f"crm:{reply.source}" if reply.source else "crm"
        return (IcmCandidate(reply.responsible.extension, talked_at, source),)


class IcmPrefetch:
    """Asks every configured source at once; history first, then the CRM, in the engine."""

    def __init__(
        self, history: ContactHistory | None, crm: CrmResponsible | None, log: EventLogger
    ) -> None:
        self._history = history
        self._crm = crm
        self._log = log

    async def sources(
        self, tenant_id: str, caller: str, call_id: str, now: datetime, window_days: int
    ) -> Sequence[IcmSource]:
        since = now - timedelta(days=window_days)
        names: list[str] = []
        lookups: list[asyncio.Future[tuple[IcmCandidate, ...]]] = []
        if self._history is not None:
            names.append(HISTORY_SOURCE)
            lookups.append(
                asyncio.ensure_future(self._history.candidates(tenant_id, caller, since))
            )
        if self._crm is not None:
            names.append("crm")
            lookups.append(
                asyncio.ensure_future(self._crm.candidates(tenant_id, caller, call_id, now))
            )
        answers = await asyncio.gather(*lookups, return_exceptions=True)
        sources: list[IcmSource] = []
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, BaseException):
                if isinstance(answer, asyncio.CancelledError):
                    raise answer
                self._log.warning(
                    "icm_source_failed", source=name, error=f"{type(answer).__name__}: {answer}"
                )
                continue
            sources.append(PrefetchedSource(name, {caller: answer}))
        return sources
