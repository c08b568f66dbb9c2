"""The api's PostgreSQL store: tenant-scoped reads and audited, versioned writes.

Every statement that touches tenant-owned rows filters on `tenant_id`; callers pass the tenant
they resolved from the URL and checked against the principal. Each write, in one transaction:
checks the expected version (optimistic concurrency), bumps `version`, appends to the audit log,
and appends a row to `config_outbox` for the `callmesh.config.v1` relay.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from callmesh_core.errors import Aborted, AlreadyExists, InvalidArgument, NotFound


class VersionConflict(Aborted):
    """If-Match named a version that is no longer current."""

    def __init__(self, resource: str, expected: int, current: int) -> None:
        super().__init__(
            f"{resource} has changed: you sent version {expected}, the current one is {current}"
        )
        self.current = current


@dataclass(frozen=True)
class Table:
    """What the generic store may touch in one table; column names never come from input."""

    name: str
    resource: str  # singular, as events, audit rows and error messages name it
    columns: tuple[str, ...]  # writable columns
    json_columns: tuple[str, ...] = ()
    tenant_scoped: bool = True
    filters: tuple[str, ...] = ()
    prefix_filters: tuple[str, ...] = ()
    unique_names: Mapping[str, str] | None = None  # constraint name -> field named in errors
    # Changes other services cache go to callmesh.config.v1 (through the outbox).
    publishes: bool = True
    contract_key: str | None = None  # column whose value the contract uses as the id


TENANTS = Table(
    "tenants",
    "tenant",
    (
        "slug",
        "name",
        "timezone",
        "default_region",
        "sip_domain",
        "language",
        "default_scenario_id",
        "max_channels",
        "enabled",
    ),
    tenant_scoped=False,
    filters=("slug", "sip_domain"),
    unique_names={"tenants_slug_key": "slug", "tenants_sip_domain_key": "sip_domain"},
)
DEPARTMENTS = Table(
    "departments",
    "department",
    ("name", "extension"),
    publishes=False,
    filters=("name",),
    unique_names={"departments_tenant_id_name_key": "name"},
)
USERS = Table(
    "users",
    "user",
    (
        "name",
        "email",
        "role",
        "department_id",
        "extension",
        "sip_realm",
        "sip_ha1_md5",
        "sip_ha1_sha256",
        "password_hash",
        "mobile",
        "permission_class",
        "outbound_caller_id",
        "max_contacts",
        "enabled",
    ),
    filters=("role", "department_id", "extension"),
    prefix_filters=("extension",),
    unique_names={"users_tenant_id_extension_key": "extension", "users_tenant_email": "email"},
)
TRUNKS = Table(
    "trunks",
    "trunk",
    (
        "name",
        "auth_mode",
        "host",
        "port",
        "transport",
        "source_addresses",
        "username",
        "secret",
        "codecs",
        "channel_limit",
        "rate_table",
        "password_secret",
        "tech_prefix",
        "send_e164",
        "enabled",
    ),
    json_columns=("rate_table",),
    filters=("name", "auth_mode"),
    unique_names={"trunks_tenant_id_name_key": "name"},
)
NUMBERS = Table(
    "numbers",
    "number",
    ("e164", "description", "scenario_id", "trunk_id", "enabled"),
    contract_key="e164",
    filters=("trunk_id", "scenario_id"),
    prefix_filters=("e164",),
    unique_names={"numbers_e164_key": "e164"},
)


ROUTING_CONFIGS = Table(
    "routing_configs",
    "routing_config",
    ("document",),
    json_columns=("document",),
)


class BadCursor(InvalidArgument):
    """A `cursor` query value this API did not issue (a query problem, not a body problem)."""


def encode_cursor(created_at: dt.datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, row_id = raw.partition("|")
        return dt.datetime.fromisoformat(stamp), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError):
        raise BadCursor("cursor is not one this API issued") from None


JSON_COLUMNS = frozenset({"rate_table", "document"})


def _row(record: asyncpg.Record | None) -> dict[str, Any] | None:
    if record is None:
        return None
    row = dict(record)
    for key, value in row.items():
        if isinstance(value, str) and key in JSON_COLUMNS:
            row[key] = json.loads(value)
    return row


def _jsonable(row: Mapping[str, Any] | None) -> str | None:
    """The audit log's before/after, without secrets."""
    if row is None:
        return None
    hidden = {"sip_ha1_md5", "sip_ha1_sha256", "password_hash", "secret", "token_hash"}
    clean = {k: ("<hidden>" if k in hidden and v is not None else v) for k, v in row.items()}
    return json.dumps(clean, default=str)


class ConfigStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # -- reads ---------------------------------------------------------------------------
    async def get(
        self, table: Table, row_id: uuid.UUID, tenant_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await self._get(conn, table, row_id, tenant_id)
        if row is None:
            raise NotFound(f"{table.resource} {row_id} not found")
        return row

    async def _get(
        self,
        conn: asyncpg.Connection,
        table: Table,
        row_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        lock: bool = False,
    ) -> dict[str, Any] | None:
        sql = f"SELECT * FROM {table.name} WHERE id = $1"
        args: list[Any] = [row_id]
        if table.tenant_scoped:
            sql += " AND tenant_id = $2"
            args.append(tenant_id)
        if lock:
            sql += " FOR UPDATE"
        return _row(await conn.fetchrow(sql, *args))

    async def list(
        self,
        table: Table,
        tenant_id: uuid.UUID | None,
        *,
        limit: int,
        cursor: str | None = None,
        filters: Mapping[str, str] | None = None,
        restrict_ids: Sequence[uuid.UUID] | None = None,
        restrict_departments: Sequence[uuid.UUID] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        where: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if table.tenant_scoped:
            where.append(f"tenant_id = {arg(tenant_id)}")
        for key, value in (filters or {}).items():
            if key in table.prefix_filters and value.endswith("*"):
                where.append(f"{key} LIKE {arg(value[:-1].replace('%', '') + '%')}")
            elif key in table.filters or key in table.prefix_filters:
                where.append(f"{key}::text = {arg(value)}")
            else:
                raise InvalidArgument(f"cannot filter {table.resource}s by {key!r}")
        if restrict_ids is not None or restrict_departments is not None:
            # A supervisor or agent sees only some users: themselves and managed departments.
            where.append(
                f"(id = ANY({arg(list(restrict_ids or []))}::uuid[]) OR "
                f"department_id = ANY({arg(list(restrict_departments or []))}::uuid[]))"
            )
        if cursor:
            created_at, last_id = decode_cursor(cursor)
            where.append(f"(created_at, id) > ({arg(created_at)}, {arg(last_id)})")
        sql = f"SELECT * FROM {table.name}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at, id LIMIT {arg(limit + 1)}"
        async with self.pool.acquire() as conn:
            rows = [_row(r) for r in await conn.fetch(sql, *args)]
        items = [r for r in rows if r is not None]
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            next_cursor = encode_cursor(items[-1]["created_at"], items[-1]["id"])
        return items, next_cursor

    # -- writes --------------------------------------------------------------------------
    async def create(
        self,
        table: Table,
        values: Mapping[str, Any],
        *,
        tenant_id: uuid.UUID | None,
        actor: str,
        request_id: str | None,
        conn: asyncpg.Connection | None = None,
        row_id: uuid.UUID | None = None,
    ) -> dict[str, Any]:
        row_id = row_id or uuid.uuid4()
        cols = ["id", *values.keys()]
        params: list[Any] = [row_id, *(self._param(table, k, v) for k, v in values.items())]
        if table.tenant_scoped:
            cols.append("tenant_id")
            params.append(tenant_id)
        placeholders = ", ".join(f"${i}" for i in range(1, len(params) + 1))
        sql = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({placeholders}) RETURNING *"
        async with self._tx(conn) as tx:
            record = await self._write(tx, table, sql, params)
            await self._record(
                tx, table, "create", tenant_id, row_id, None, record, actor, request_id
            )
        return record

    async def update(
        self,
        table: Table,
        row_id: uuid.UUID,
        values: Mapping[str, Any],
        *,
        tenant_id: uuid.UUID | None,
        expected_version: int | None,
        actor: str,
        request_id: str | None,
        conn: asyncpg.Connection | None = None,
    ) -> dict[str, Any]:
        async with self._tx(conn) as tx:
            before = await self._current(tx, table, row_id, tenant_id, expected_version)
            sets = [f"{k} = ${i}" for i, k in enumerate(values, start=2)]
            sets += ["version = version + 1", "updated_at = now()"]
            sql = f"UPDATE {table.name} SET {', '.join(sets)} WHERE id = $1 RETURNING *"
            params = [row_id, *(self._param(table, k, v) for k, v in values.items())]
            after = await self._write(tx, table, sql, params)
            await self._record(
                tx, table, "update", tenant_id, row_id, before, after, actor, request_id
            )
        return after

    async def upsert(
        self,
        table: Table,
        row_id: uuid.UUID,
        values: Mapping[str, Any],
        *,
        tenant_id: uuid.UUID | None,
        expected_version: int | None,
        actor: str,
        request_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Create or change the row with this id; (row, changed). Re-sending the same content
        changes nothing and keeps the version, so retried upserts are harmless."""
        async with self._tx(None) as tx:
            before = await self._get(tx, table, row_id, tenant_id, lock=True)
            if before is None:
                if expected_version:
                    raise VersionConflict(table.resource, expected_version, 0)
                row = await self.create(
                    table,
                    values,
                    tenant_id=tenant_id,
                    actor=actor,
                    request_id=request_id,
                    conn=tx,
                    row_id=row_id,
                )
                return row, True
            if expected_version and before["version"] != expected_version:
                raise VersionConflict(table.resource, expected_version, before["version"])
            different = {k: v for k, v in values.items() if before.get(k) != v}
            if not different:
                return before, False
            row = await self.update(
                table,
                row_id,
                different,
                tenant_id=tenant_id,
                expected_version=None,
                actor=actor,
                request_id=request_id,
                conn=tx,
            )
            return row, True

    async def delete(
        self,
        table: Table,
        row_id: uuid.UUID,
        *,
        tenant_id: uuid.UUID | None,
        expected_version: int | None,
        actor: str,
        request_id: str | None,
    ) -> None:
        async with self._tx(None) as tx:
            before = await self._current(tx, table, row_id, tenant_id, expected_version)
            await tx.execute(f"DELETE FROM {table.name} WHERE id = $1", row_id)
            await self._record(
                tx,
                table,
                "delete",
                tenant_id,
                row_id,
                before,
                None,
                actor,
                request_id,
                version=before["version"] + 1,
            )

    # -- helpers -------------------------------------------------------------------------
    async def _current(
        self,
        conn: asyncpg.Connection,
        table: Table,
        row_id: uuid.UUID,
        tenant_id: uuid.UUID | None,
        expected_version: int | None,
    ) -> dict[str, Any]:
        """The row, locked for the rest of the transaction, after the If-Match check."""
        row = await self._get(conn, table, row_id, tenant_id, lock=True)
        if row is None:
            raise NotFound(f"{table.resource} {row_id} not found")
        if expected_version is not None and row["version"] != expected_version:
            raise VersionConflict(table.resource, expected_version, row["version"])
        return row

    def _tx(self, conn: asyncpg.Connection | None) -> _Transaction:
        return _Transaction(self.pool, conn)

    @staticmethod
    def _param(table: Table, key: str, value: Any) -> Any:
        if key not in table.columns:
            raise ValueError(f"{key} is not a writable column of {table.name}")
        if key in table.json_columns:
            return json.dumps(value)
        return value

    @staticmethod
    async def _write(
        conn: asyncpg.Connection, table: Table, sql: str, params: Sequence[Any]
    ) -> dict[str, Any]:
        try:
            record = _row(await conn.fetchrow(sql, *params))
        except asyncpg.UniqueViolationError as exc:
            field = (table.unique_names or {}).get(exc.constraint_name or "", "value")
            raise AlreadyExists(f"a {table.resource} with this {field} already exists") from None
        except asyncpg.ForeignKeyViolationError:
            raise InvalidArgument(
                f"the {table.resource} refers to something that does not exist"
            ) from None
        except asyncpg.CheckViolationError as exc:
            raise InvalidArgument(f"{table.resource} rejected: {exc.constraint_name}") from None
        assert record is not None
        return record

    @staticmethod
    async def _record(
        conn: asyncpg.Connection,
        table: Table,
        action: str,
        tenant_id: uuid.UUID | None,
        row_id: uuid.UUID,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        actor: str,
        request_id: str | None,
        version: int | None = None,
    ) -> None:
        # A tenant row is its own tenant: its changes are audited and published under it.
        tenant_id = tenant_id if table.tenant_scoped else row_id
        await conn.execute(
            "INSERT INTO audit_log (tenant_id, actor, action, resource, resource_id, before,"
            " after, request_id) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8)",
            tenant_id,
            actor,
            action,
            table.resource,
            row_id,
            _jsonable(before),
            _jsonable(after),
            request_id,
        )
        if tenant_id is not None and table.publishes:
            current = after or before or {}
            key = str(current[table.contract_key]) if table.contract_key else str(row_id)
            await conn.execute(
                "INSERT INTO config_outbox (tenant_id, actor, kind, resource_id, resource_key,"
                " version, deleted) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                tenant_id,
                actor,
                table.resource,
                row_id,
                key,
                version if version is not None else (after or {}).get("version", 0),
                action == "delete",
            )
            await conn.execute("SELECT pg_notify('callmesh_config_outbox', '')")


class _Transaction:
    """`async with` a transaction on a given connection, or on one taken from the pool."""

    def __init__(self, pool: asyncpg.Pool, conn: asyncpg.Connection | None) -> None:
        self._pool = pool
        self._conn = conn
        self._acquired: Any = None
        self._tx: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is None:
            self._acquired = self._pool.acquire()
            conn = await self._acquired.__aenter__()
        self._tx = conn.transaction()
        await self._tx.__aenter__()
        return conn

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self._tx.__aexit__(*exc)
        finally:
            if self._acquired is not None:
                await self._acquired.__aexit__(*exc)
