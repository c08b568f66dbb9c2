"""PostgreSQL plumbing: per-service pools, versioned SQL migrations, idempotent event effects.

Each service owns one schema (ARCHITECTURE §2). Its migrations are plain SQL files named
`NNNN_description.sql` in its package (e.g. `callmesh_queue/migrations/0001_init.sql`), applied
in version order at start-up, each exactly once, each in its own transaction. Replicas that
start together serialise on a transaction-scoped advisory lock keyed by the schema name, so the
second one waits, then finds the work done. A file whose content changed after it was applied
stops the service: the database and the code would silently disagree otherwise.

The runner also creates two tables of its own in the schema:
- `schema_migrations(version, name, checksum, applied_at)`;
- `processed_events(consumer_group, event_id, processed_at)`, used through `claim_event` by
  Kafka handlers so that a redelivered event applies its effect once.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4,})_([a-z0-9_]+)\.sql$")
# First key of the two-key advisory lock: a constant that says "callmesh migrations", so the
# lock cannot collide with other users of advisory locks keyed by hashtext(schema) alone.
_MIGRATION_LOCK_SPACE = 0x43_4D_4D_47  # "CMMG"


class MigrationError(Exception):
    """The migrations cannot be applied safely; the message says which file and why."""


def check_schema_name(schema: str) -> str:
    """Schema names are interpolated into SQL, so only plain lowercase identifiers pass."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return schema


async def create_pool(
    dsn: str, *, schema: str, min_size: int = 1, max_size: int = 10, **kwargs: Any
) -> asyncpg.Pool:
    """An asyncpg pool whose connections resolve unqualified names in `schema` first."""
    check_schema_name(schema)
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": f"{schema}, public"},
        **kwargs,
    )
    return pool


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


def _migration_from(filename: str, content: bytes) -> Migration | None:
    match = _MIGRATION_FILE.match(filename)
    if match is None:
        return None
    return Migration(
        version=int(match.group(1)),
        name=match.group(2),
        sql=content.decode("utf-8"),
        checksum=hashlib.sha256(content).hexdigest(),
    )


def load_migrations(source: str | Path) -> list[Migration]:
    """Migrations from a directory path or from a package's `migrations/` resource directory.

    `source` is either a `Path` or a dotted package name such as `"callmesh_queue"`.
    """
    found: list[Migration] = []
    if isinstance(source, Path):
        entries = [(p.name, p.read_bytes()) for p in source.iterdir() if p.is_file()]
    else:
        directory = importlib.resources.files(source).joinpath("migrations")
        entries = [(p.name, p.read_bytes()) for p in directory.iterdir() if p.is_file()]
    for filename, content in entries:
        migration = _migration_from(filename, content)
        if migration is not None:
            found.append(migration)
        elif filename.endswith(".sql"):
            raise MigrationError(f"{filename}: migration files are named NNNN_description.sql")
    found.sort(key=lambda m: m.version)
    for earlier, later in itertools.pairwise(found):
        if earlier.version == later.version:
            raise MigrationError(
                f"{earlier.filename} and {later.filename} share version {earlier.version}"
            )
    return found


async def _lock_schema(connection: asyncpg.Connection, schema: str) -> None:
    await connection.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _MIGRATION_LOCK_SPACE, schema
    )


async def apply_migrations(
    connection: asyncpg.Connection, schema: str, migrations: Iterable[Migration]
) -> list[int]:
    """Apply the pending `migrations` to `schema`; returns the versions this call applied.

    Raises `MigrationError` when an applied file's checksum changed or a file fails.
    """
    check_schema_name(schema)
    wanted = sorted(migrations, key=lambda m: m.version)
    async with connection.transaction():
        await _lock_schema(connection, schema)
        await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await connection.execute(
            f"""
            CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE TABLE IF NOT EXISTS {schema}.processed_events (
                consumer_group text NOT NULL,
                event_id text NOT NULL,
                processed_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer_group, event_id)
            );
            """
        )
        applied = await _applied_checksums(connection, schema)
    _verify_checksums(wanted, applied)

    done: list[int] = []
    for migration in wanted:
        if migration.version in applied:
            continue
        async with connection.transaction():
            await _lock_schema(connection, schema)
            # Another replica may have applied it while we waited for the lock.
            current = await _applied_checksums(connection, schema)
            if migration.version in current:
                _verify_checksums([migration], current)
                continue
            await connection.execute(f"SET LOCAL search_path TO {schema}, public")
            try:
                await connection.execute(migration.sql)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"{schema}/{migration.filename} failed: {type(exc).__name__}: {exc}"
                ) from exc
            await connection.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, checksum)"
                " VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        done.append(migration.version)
    return done


async def _applied_checksums(connection: asyncpg.Connection, schema: str) -> dict[int, str]:
    rows = await connection.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")
    return {int(row["version"]): str(row["checksum"]) for row in rows}


def _verify_checksums(migrations: Iterable[Migration], applied: dict[int, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"{migration.filename} was changed after it was applied "
                f"(checksum {migration.checksum[:12]} != applied {recorded[:12]}); "
                "add a new migration instead of editing an applied one"
            )


async def migrate(dsn: str, schema: str, source: str | Path) -> list[int]:
    """Connect, apply the migrations found in `source`, disconnect (start-up convenience)."""
    migrations = load_migrations(source)
    connection: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await apply_migrations(connection, schema, migrations)
    finally:
        await connection.close()


async def claim_event(connection: asyncpg.Connection, consumer_group: str, event_id: str) -> bool:
    """Record that `consumer_group` applies `event_id`; False if it was applied before.

    Call it inside the transaction that applies the event's effect and skip the effect on
    False. The claim commits or rolls back together with the effect, and a concurrent duplicate
    waits on the primary key until the first transaction ends, then gets False.
    Uses `processed_events` through the search path (see `create_pool`).
    """
    claimed = await connection.fetchval(
        "INSERT INTO processed_events (consumer_group, event_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        consumer_group,
        event_id,
    )
    return claimed is True
