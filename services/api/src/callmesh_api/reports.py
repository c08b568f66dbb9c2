"""Reports over the CDRs: call list, missed calls not called back, load, ASR/ACD/NER, CSV.

Who sees what (domain.roles): a tenant admin (or the platform admin) sees every call of the
tenant; a supervisor sees calls that touched a user of a department they manage (or themselves);
an agent sees only calls they placed, were rung for or answered. Another tenant's data is *not
found*. A supervisor's scope follows the users' departments as they are now (a CDR records
people, not the department they were in). Days and hours mean the tenant's time zone:
`from=2026-11-20` is that day's local midnight, and the hourly report groups by local hour.
Durations filtered on (`min_duration`, `max_duration`) are talk time, in seconds.

Figures (every one over the calls of the period that have ended; see `callmesh_api.cdr` for
how an outcome is decided):
  ASR = answered / attempts
  ACD = average talk time of the answered calls
  NER = (answered + busy + no_answer + rejected) / attempts — the calls the network delivered
        to the called party, whatever the party did; failures (the platform or a carrier could
        not connect), caller cancels and queue abandons count as attempts only.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from callmesh_core.errors import InvalidArgument, NotFound, PermissionDenied

from .cdr import NOT_ANSWERED, OUTCOMES
from .config_service import ConfigService
from .domain.roles import Principal, Role

MAX_PERIOD_DAYS = 400


class BadQuery(InvalidArgument):
    """A report query parameter that cannot be used (a query problem: 400, not 422)."""


_DIGITS = re.compile(r"^[0-9]+$")  # str.isdigit() also accepts "²", which int() refuses
DIRECTIONS = ("inbound", "outbound", "internal")
CALL_FILTERS = (
    "from",
    "to",
    "direction",
    "outcome",
    "extension",
    "department_id",
    "caller_prefix",
    "min_duration",
    "max_duration",
)
# What the call list and the CSV export show, in this order.
CALL_COLUMNS = (
    "call_id",
    "direction",
    "started_at",
    "answered_at",
    "ended_at",
    "outcome",
    "caller_number",
    "caller_name",
    "callee_number",
    "did",
    "caller_extension",
    "answered_by_extension",
    "answered_by_user_id",
    "rang_extensions",
    "ring_ms",
    "talk_ms",
    "total_ms",
    "post_dial_delay_ms",
    "cause",
    "sip_status",
    "hangup_side",
    "queue_id",
    "queue_wait_ms",
    "mos",
    "trunk_id",
    "caller_user_id",
)


@dataclass(frozen=True)
class CallFilter:
    """A period [start, end) in UTC and the optional narrowing of the call list."""

    start: dt.datetime
    end: dt.datetime
    direction: str | None = None
    outcome: str | None = None
    extension: str | None = None
    department_id: uuid.UUID | None = None
    caller_prefix: str | None = None
    min_talk_ms: int | None = None
    max_talk_ms: int | None = None


def _moment(text: str, zone: zoneinfo.ZoneInfo, name: str) -> tuple[dt.datetime, bool]:
    """A query time: a date (local midnight; True) or a date-time (local if naive; False)."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            if not 1970 <= day.year <= 2200:
                raise BadQuery(f"{name} must lie between 1970 and 2200")
            return dt.datetime.combine(day, dt.time(), zone), True
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(
            f"{name} must be a date (2026-11-20) or a date-time (2026-11-20T09:00:00+03:00)"
        ) from None
    if not 1970 <= moment.year <= 2200:
        raise BadQuery(f"{name} must lie between 1970 and 2200")
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)), False


def parse_call_filter(
    query: Mapping[str, str], timezone: str, now: dt.datetime, *, allowed: tuple[str, ...]
) -> CallFilter:
    """Read the report query parameters. `to` as a date includes that whole day; without
    `from` the period is today (local); without `to` it ends with the day `from` starts."""
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise BadQuery(f"unknown query parameter(s): {', '.join(unknown)}")
    zone = zoneinfo.ZoneInfo(timezone)
    if "from" in query:
        start, _ = _moment(query["from"], zone, "from")
    else:
        start = dt.datetime.combine(now.astimezone(zone).date(), dt.time(), zone)
    if "to" in query:
        end, is_day = _moment(query["to"], zone, "to")
        if is_day:
            end = dt.datetime.combine(end.date() + dt.timedelta(days=1), dt.time(), zone)
    else:
        end = dt.datetime.combine(
            start.astimezone(zone).date() + dt.timedelta(days=1), dt.time(), zone
        )
    if end <= start:
        raise BadQuery("to must be after from")
    if end - start > dt.timedelta(days=MAX_PERIOD_DAYS):
        raise BadQuery(f"the period may be at most {MAX_PERIOD_DAYS} days")
    direction = query.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise BadQuery(f"direction is one of {', '.join(DIRECTIONS)}")
    outcome = query.get("outcome")
    if outcome is not None and outcome not in ("missed", "in_progress", *OUTCOMES):
        raise BadQuery(f"outcome is missed, in_progress or one of {', '.join(OUTCOMES)}")
    extension = query.get("extension")
    if extension is not None and not (_DIGITS.match(extension) and 2 <= len(extension) <= 6):
        raise BadQuery("extension is 2 to 6 digits")
    department: uuid.UUID | None = None
    if "department_id" in query:
        try:
            department = uuid.UUID(query["department_id"])
        except ValueError:
            raise BadQuery("department_id is not an id") from None
    prefix = query.get("caller_prefix")
    if prefix is not None:
        digits = prefix.removeprefix("+")
        if not _DIGITS.match(digits) or len(digits) > 15:
            raise BadQuery("caller_prefix is digits, optionally after a +")
    bounds: list[int | None] = []
    for name in ("min_duration", "max_duration"):
        raw = query.get(name)
        if raw is None:
            bounds.append(None)
        elif not _DIGITS.match(raw) or len(raw) > 8:
            raise BadQuery(f"{name} is a whole number of seconds")
        else:
            bounds.append(int(raw) * 1000)
    return CallFilter(
        start=start.astimezone(dt.UTC),
        end=end.astimezone(dt.UTC),
        direction=direction,
        outcome=outcome,
        extension=extension,
        department_id=department,
        caller_prefix=prefix,
        min_talk_ms=bounds[0],
        max_talk_ms=bounds[1],
    )


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, shape: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadQuery("cursor is not one this API issued") from None
    if not isinstance(values, list) or len(values) != shape:
        raise BadQuery("cursor is not one this API issued")
    return values


def _cursor_time(stamp: Any) -> dt.datetime:
    moment = dt.datetime.fromisoformat(str(stamp))
    if moment.tzinfo is None or not 1970 <= moment.year <= 2200:
        raise ValueError("not a time this API puts in cursors")
    return moment


class _Sql:
    """WHERE clauses with numbered parameters."""

    def __init__(self) -> None:
        self.args: list[Any] = []
        self.where: list[str] = []

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def clause(self) -> str:
        return " AND ".join(self.where) if self.where else "true"


@dataclass(frozen=True)
class Scope:
    tenant_id: uuid.UUID
    timezone: str
    # None: every call of the tenant; otherwise calls touching one of these users.
    users: tuple[uuid.UUID, ...] | None


class ReportService:
    def __init__(self, config: ConfigService) -> None:
        self.config = config
        self.pool = config.store.pool

    async def scope(self, principal: Principal, tenant_id: uuid.UUID) -> Scope:
        tenant = await self.config.tenant(principal, tenant_id)  # NotFound outside the tenant
        if principal.role in (Role.PLATFORM_ADMIN, Role.TENANT_ADMIN):
            return Scope(tenant_id, tenant["timezone"], None)
        users: set[uuid.UUID] = {principal.user_id} if principal.user_id else set()
        if principal.role is Role.SUPERVISOR and principal.managed_departments:
            rows = await self.pool.fetch(
                "SELECT id FROM users WHERE tenant_id = $1 AND department_id = ANY($2::uuid[])",
                tenant_id,
                list(principal.managed_departments),
            )
            users.update(r["id"] for r in rows)
        return Scope(tenant_id, tenant["timezone"], tuple(sorted(users)))

    # -- the common WHERE ---------------------------------------------------------------------
    async def _where(self, scope: Scope, flt: CallFilter, alias: str = "") -> _Sql:
        c = f"{alias}." if alias else ""
        sql = _Sql()
        sql.where.append(f"{c}tenant_id = {sql.arg(scope.tenant_id)}")
        sql.where.append(f"{c}started_at >= {sql.arg(flt.start)}")
        sql.where.append(f"{c}started_at < {sql.arg(flt.end)}")
        if scope.users is not None:
            sql.where.append(f"{c}party_user_ids && {sql.arg(list(scope.users))}::uuid[]")
        if flt.direction:
            sql.where.append(f"{c}direction = {sql.arg(flt.direction)}")
        if flt.outcome == "missed":
            sql.where.append(f"{c}outcome = ANY({sql.arg(list(NOT_ANSWERED))}::text[])")
        elif flt.outcome:
            sql.where.append(f"{c}outcome = {sql.arg(flt.outcome)}")
        if flt.extension:
            ext = sql.arg(flt.extension)
            sql.where.append(
                f"({c}rang_extensions @> ARRAY[{ext}]::text[] OR {c}caller_extension = {ext})"
            )
        if flt.department_id:
            members = await self.pool.fetch(
                "SELECT id FROM users WHERE tenant_id = $1 AND department_id = $2",
                scope.tenant_id,
                flt.department_id,
            )
            exists = await self.pool.fetchval(
                "SELECT true FROM departments WHERE tenant_id = $1 AND id = $2",
                scope.tenant_id,
                flt.department_id,
            )
            if not exists:
                raise NotFound(f"department {flt.department_id} not found")
            sql.where.append(f"{c}party_user_ids && {sql.arg([m['id'] for m in members])}::uuid[]")
        if flt.caller_prefix:
            # "+7812" matches the number as presented (E.164); "812" matches the national
            # number (after any country code: +7812..., 8812... in RU) or the number as given.
            prefix = sql.arg(flt.caller_prefix + "%")
            if flt.caller_prefix.startswith("+"):
                sql.where.append(f"{c}caller_number LIKE {prefix}")
            else:
                sql.where.append(
                    f"({c}caller_national LIKE {prefix} OR {c}caller_number LIKE {prefix})"
                )
        if flt.min_talk_ms is not None:
            sql.where.append(f"coalesce({c}talk_ms, 0) >= {sql.arg(flt.min_talk_ms)}")
        if flt.max_talk_ms is not None:
            sql.where.append(f"coalesce({c}talk_ms, 0) <= {sql.arg(flt.max_talk_ms)}")
        return sql

    # -- call list ----------------------------------------------------------------------------
    async def calls(
        self, scope: Scope, flt: CallFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        sql = await self._where(scope, flt)
        if cursor:
            stamp, call_id = decode_cursor(cursor, 2)
            try:
                after = (_cursor_time(stamp), uuid.UUID(str(call_id)))
            except ValueError:
                raise BadQuery("cursor is not one this API issued") from None
            sql.where.append(f"(started_at, call_id) < ({sql.arg(after[0])}, {sql.arg(after[1])})")
        query = (
            f"SELECT {', '.join(CALL_COLUMNS)} FROM cdrs WHERE {sql.clause()}"
            f" ORDER BY started_at DESC, call_id DESC LIMIT {sql.arg(limit + 1)}"
        )
        rows = [dict(r) for r in await self.pool.fetch(query, *sql.args)]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            next_cursor = encode_cursor([last["started_at"].isoformat(), str(last["call_id"])])
        return [self._localise(scope, r) for r in rows], next_cursor

    async def calls_csv(self, scope: Scope, flt: CallFilter) -> AsyncIterator[list[Any]]:
        """Every matching call, oldest first, read through a server-side cursor. The query is
        checked here (an unknown department is *not found*) before the caller starts sending:
        once a streamed response has begun, a problem can no longer be reported."""
        sql = await self._where(scope, flt)
        query = (
            f"SELECT {', '.join(CALL_COLUMNS)} FROM cdrs WHERE {sql.clause()}"
            " ORDER BY started_at, call_id"
        )
        return self._csv_rows(scope, query, sql.args)

    async def _csv_rows(
        self, scope: Scope, query: str, args: list[Any]
    ) -> AsyncIterator[list[Any]]:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            async for row in conn.cursor(query, *args, prefetch=1000):
                local = self._localise(scope, dict(row))
                yield [local[name] for name in CSV_FIELDS]

    # -- missed calls -------------------------------------------------------------------------
    async def missed(
        self, scope: Scope, flt: CallFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Outside numbers with inbound calls missed in the period and no answered call with
        them since the last one (an outbound call to them, or an inbound call from them)."""
        sql = await self._where(scope, flt)
        sql.where.append("direction = 'inbound'")
        sql.where.append(f"outcome = ANY({sql.arg(list(NOT_ANSWERED))}::text[])")
        sql.where.append("remote_number IS NOT NULL")  # a hidden number cannot be called back
        tenant = sql.arg(scope.tenant_id)
        page = ""
        if cursor:
            stamp, number = decode_cursor(cursor, 2)
            try:
                last = _cursor_time(stamp)
            except ValueError:
                raise BadQuery("cursor is not one this API issued") from None
            page = f"AND (m.last_missed_at, m.number) < ({sql.arg(last)}, {sql.arg(str(number))})"
        query = f"""
            WITH missed AS (
                SELECT remote_number AS number,
                       count(*) AS missed_calls,
                       min(started_at) AS first_missed_at,
                       max(started_at) AS last_missed_at,
                       (array_agg(call_id ORDER BY started_at DESC))[1] AS last_call_id,
                       (array_agg(caller_name ORDER BY started_at DESC))[1] AS caller_name
                FROM cdrs WHERE {sql.clause()}
                GROUP BY remote_number
            )
            SELECT m.* FROM missed m
            WHERE NOT EXISTS (
                SELECT 1 FROM cdrs later
                WHERE later.tenant_id = {tenant} AND later.remote_number = m.number
                  AND later.started_at > m.last_missed_at AND later.outcome = 'answered'
                  AND later.direction IN ('inbound', 'outbound')
            ) {page}
            ORDER BY m.last_missed_at DESC, m.number DESC
            LIMIT {sql.arg(limit + 1)}
        """
        rows = [dict(r) for r in await self.pool.fetch(query, *sql.args)]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(
                [rows[-1]["last_missed_at"].isoformat(), rows[-1]["number"]]
            )
        return [self._localise(scope, r) for r in rows], next_cursor

    # -- load ---------------------------------------------------------------------------------
    async def employee_load(self, scope: Scope, flt: CallFilter) -> list[dict[str, Any]]:
        """Per user: calls they took part in, calls they handled (answered, or placed and the
        other side answered), inbound calls that rang them and nobody answered, talk time."""
        sql = await self._where(scope, flt, alias="c")
        # The users listed (numbered after the calls' parameters, in the same statement).
        listed = [f"u.tenant_id = {sql.arg(scope.tenant_id)}"]
        if scope.users is not None:
            listed.append(f"u.id = ANY({sql.arg(list(scope.users))}::uuid[])")
        if flt.department_id:
            listed.append(f"u.department_id = {sql.arg(flt.department_id)}")
        who = " AND ".join(listed)
        query = f"""
            WITH parts AS (
                SELECT p.user_id, c.call_id, c.direction, c.outcome, c.talk_ms,
                       (c.answered_by_user_id = p.user_id OR
                        (c.caller_user_id = p.user_id AND c.outcome = 'answered')) AS handled
                FROM cdrs c CROSS JOIN LATERAL unnest(c.party_user_ids) AS p(user_id)
                WHERE {sql.clause()}
            )
            SELECT u.id AS user_id, u.name, u.extension, u.department_id,
                   count(p.call_id) AS calls,
                   count(p.call_id) FILTER (WHERE p.direction = 'inbound') AS inbound,
                   count(p.call_id) FILTER (WHERE p.direction = 'outbound') AS outbound,
                   count(p.call_id) FILTER (WHERE p.handled) AS answered,
                   count(p.call_id) FILTER (WHERE p.direction = 'inbound'
                                            AND p.outcome <> 'answered'
                                            AND p.outcome <> 'in_progress') AS missed,
                   coalesce(sum(p.talk_ms) FILTER (WHERE p.handled), 0) AS talk_ms
            FROM users u LEFT JOIN parts p ON p.user_id = u.id
            WHERE {who}
            GROUP BY u.id ORDER BY u.extension
        """
        return [_with_average(dict(r)) for r in await self.pool.fetch(query, *sql.args)]

    async def department_load(self, scope: Scope, flt: CallFilter) -> list[dict[str, Any]]:
        """Per department: distinct calls touching its people, handled by them, talk time."""
        sql = await self._where(scope, flt, alias="c")
        tenant = sql.arg(scope.tenant_id)
        visible = ""
        if scope.users is not None:
            seen = sql.arg(list(scope.users)) + "::uuid[]"
            visible = f"AND d.id IN (SELECT department_id FROM users WHERE id = ANY({seen}))"
        if flt.department_id:
            visible += f" AND d.id = {sql.arg(flt.department_id)}"
        query = f"""
            WITH parts AS (
                SELECT u.department_id, c.call_id, c.direction,
                       bool_or(c.answered_by_user_id = u.id OR
                               (c.caller_user_id = u.id AND c.outcome = 'answered')) AS handled,
                       max(c.talk_ms) AS talk_ms,
                       bool_or(c.direction = 'inbound' AND c.outcome <> 'answered'
                               AND c.outcome <> 'in_progress') AS missed
                FROM cdrs c CROSS JOIN LATERAL unnest(c.party_user_ids) AS p(user_id)
                JOIN users u ON u.id = p.user_id AND u.department_id IS NOT NULL
                WHERE {sql.clause()}
                GROUP BY u.department_id, c.call_id, c.direction
            )
            SELECT d.id AS department_id, d.name,
                   count(p.call_id) AS calls,
                   count(p.call_id) FILTER (WHERE p.direction = 'inbound') AS inbound,
                   count(p.call_id) FILTER (WHERE p.direction = 'outbound') AS outbound,
                   count(p.call_id) FILTER (WHERE p.handled) AS answered,
                   count(p.call_id) FILTER (WHERE p.missed) AS missed,
                   coalesce(sum(p.talk_ms) FILTER (WHERE p.handled), 0) AS talk_ms
            FROM departments d LEFT JOIN parts p ON p.department_id = d.id
            WHERE d.tenant_id = {tenant} {visible}
            GROUP BY d.id ORDER BY d.name
        """
        return [_with_average(dict(r)) for r in await self.pool.fetch(query, *sql.args)]

    async def hourly_load(self, scope: Scope, flt: CallFilter) -> list[dict[str, Any]]:
        """The 24 local hours of the day over the period: calls, answered, missed, talk."""
        sql = await self._where(scope, flt)
        zone = sql.arg(scope.timezone)
        query = f"""
            SELECT extract(hour FROM started_at AT TIME ZONE {zone})::int AS hour,
                   count(*) AS calls,
                   count(*) FILTER (WHERE outcome = 'answered') AS answered,
                   count(*) FILTER (WHERE direction = 'inbound' AND outcome <> 'answered'
                                    AND outcome <> 'in_progress') AS missed,
                   coalesce(sum(talk_ms) FILTER (WHERE outcome = 'answered'), 0) AS talk_ms
            FROM cdrs WHERE {sql.clause()} GROUP BY 1
        """
        found = {r["hour"]: dict(r) for r in await self.pool.fetch(query, *sql.args)}
        empty = {"calls": 0, "answered": 0, "missed": 0, "talk_ms": 0}
        hours = [found.get(hour, {**empty, "hour": hour}) for hour in range(24)]
        for row in hours:
            row["talk_seconds"] = row.pop("talk_ms") / 1000
        return hours

    async def stats(self, scope: Scope, flt: CallFilter) -> dict[str, Any]:
        """ASR, ACD and NER over the ended calls of the period (formulas in the docstring)."""
        sql = await self._where(scope, flt)
        sql.where.append("outcome <> 'in_progress'")
        counts = ", ".join(f"count(*) FILTER (WHERE outcome = '{o}') AS {o}" for o in OUTCOMES)
        row = await self.pool.fetchrow(
            f"SELECT count(*) AS attempts, {counts},"
            " avg(talk_ms) FILTER (WHERE outcome = 'answered') AS acd_ms,"
            " coalesce(sum(talk_ms) FILTER (WHERE outcome = 'answered'), 0) AS talk_ms"
            f" FROM cdrs WHERE {sql.clause()}",
            *sql.args,
        )
        assert row is not None
        result = dict(row)
        attempts = result["attempts"]
        network = sum(result[o] for o in ("answered", "busy", "no_answer", "rejected"))
        result["asr"] = result["answered"] / attempts if attempts else None
        result["ner"] = network / attempts if attempts else None
        result["acd_seconds"] = (
            float(result.pop("acd_ms")) / 1000 if result["acd_ms"] is not None else None
        )
        result["talk_seconds"] = result.pop("talk_ms") / 1000
        return {**result, **period(scope, flt)}

    async def queue_load(
        self, scope: Scope, flt: CallFilter, service_level_seconds: int = 20
    ) -> list[dict[str, Any]]:
        """Per queue: callers that waited, answered, abandoned, left (overflow, own choice),
        asked for a call-back; average and longest wait; service level = answered within
        `service_level_seconds` / callers that waited. Admins only: an abandoned caller touched
        no user, so a supervisor's user scope would hide exactly the calls that matter."""
        if scope.users is not None:
            raise PermissionDenied("queue reports are for tenant admins")
        sql = await self._where(scope, flt)
        sql.where.append("queue_id IS NOT NULL")
        threshold = sql.arg(service_level_seconds * 1000)
        query = f"""
            SELECT queue_id, count(*) AS waited,
                   count(*) FILTER (WHERE queue_result = 'answered') AS answered,
                   count(*) FILTER (WHERE queue_result = 'abandoned'
                                    OR (queue_result IS NULL AND outcome = 'abandoned'))
                       AS abandoned,
                   count(*) FILTER (WHERE queue_result = 'left') AS left_queue,
                   count(*) FILTER (WHERE queue_result = 'callback') AS callbacks,
                   count(*) FILTER (WHERE queue_result = 'answered'
                                    AND queue_wait_ms <= {threshold}) AS answered_in_time,
                   avg(queue_wait_ms) AS average_wait_ms,
                   max(queue_wait_ms) AS longest_wait_ms
            FROM cdrs WHERE {sql.clause()} GROUP BY queue_id ORDER BY queue_id
        """
        rows = []
        for record in await self.pool.fetch(query, *sql.args):
            row = dict(record)
            in_time = row.pop("answered_in_time")
            average, longest = row.pop("average_wait_ms"), row.pop("longest_wait_ms")
            row["service_level"] = in_time / row["waited"] if row["waited"] else None
            row["service_level_seconds"] = service_level_seconds
            row["average_wait_seconds"] = None if average is None else float(average) / 1000
            row["longest_wait_seconds"] = None if longest is None else longest / 1000
            rows.append(row)
        return rows

    @staticmethod
    def _localise(scope: Scope, row: dict[str, Any]) -> dict[str, Any]:
        """Times in the tenant's zone; durations in seconds."""
        zone = zoneinfo.ZoneInfo(scope.timezone)
        out: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                out[key] = value.astimezone(zone)
            elif key.endswith("_ms") and key != "post_dial_delay_ms":
                out[key.removesuffix("_ms") + "_seconds"] = None if value is None else value / 1000
            else:
                out[key] = value
        return out


def period(scope: Scope, flt: CallFilter) -> dict[str, dt.datetime]:
    zone = zoneinfo.ZoneInfo(scope.timezone)
    return {"period_from": flt.start.astimezone(zone), "period_to": flt.end.astimezone(zone)}


def _with_average(row: dict[str, Any]) -> dict[str, Any]:
    talk = row.pop("talk_ms")
    row["talk_seconds"] = talk / 1000
    row["average_talk_seconds"] = talk / 1000 / row["answered"] if row["answered"] else None
    return row


# CSV: the call list's columns with durations in seconds, one call per row.
CSV_FIELDS = tuple(
    c.removesuffix("_ms") + "_seconds" if c.endswith("_ms") and c != "post_dial_delay_ms" else c
    for c in CALL_COLUMNS
)
