"""Migrations and idempotent effects against the real local PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import pytest
from callmesh_core.db import (
    MigrationError,
    apply_migrations,
    claim_event,
    create_pool,
    load_migrations,
    migrate,
)

INIT = """
CREATE TABLE extensions (number text PRIMARY KEY, name text NOT NULL);
-- Widen the window in which a second, unsynchronised runner would also apply this file.
SELECT pg_sleep(0.3);
INSERT INTO extensions VALUES ('101', 'reception');
"""
SECOND = "ALTER TABLE extensions ADD COLUMN enabled boolean NOT NULL DEFAULT true;"


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def _rows(dsn: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(sql))
    finally:
        await connection.close()


async def test_migrations_apply_once_in_order(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    source = _write(tmp_path, {"0002_enabled.sql": SECOND, "0001_init.sql": INIT, "README": "x"})
    assert await migrate(postgres_dsn, schema, source) == [1, 2]
    assert await migrate(postgres_dsn, schema, source) == []
    rows = await _rows(postgres_dsn, f"SELECT number, enabled FROM {schema}.extensions")
    assert [(r["number"], r["enabled"]) for r in rows] == [("101", True)]
    versions = await _rows(
        postgres_dsn, f"SELECT version, name FROM {schema}.schema_migrations ORDER BY version"
    )
    assert [(r["version"], r["name"]) for r in versions] == [(1, "init"), (2, "enabled")]

    _write(tmp_path, {"0003_more.sql": "CREATE TABLE numbers (e164 text PRIMARY KEY);"})
    assert await migrate(postgres_dsn, schema, source) == [3]


async def test_changed_applied_file_is_refused(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    source = _write(tmp_path, {"0001_init.sql": "CREATE TABLE a (x int);"})
    await migrate(postgres_dsn, schema, source)
    _write(tmp_path, {"0001_init.sql": "CREATE TABLE a (x bigint);"})
    with pytest.raises(MigrationError, match=r"0001_init\.sql was changed after it was applied"):
        await migrate(postgres_dsn, schema, source)


async def test_failing_file_rolls_back_and_names_itself(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    source = _write(
        tmp_path,
        {"0001_ok.sql": "CREATE TABLE a (x int);", "0002_bad.sql": "CREATE TABLE a (x int);"},
    )
    with pytest.raises(MigrationError, match=r"0002_bad\.sql failed: DuplicateTableError"):
        await migrate(postgres_dsn, schema, source)
    versions = await _rows(postgres_dsn, f"SELECT version FROM {schema}.schema_migrations")
    assert [r["version"] for r in versions] == [1]


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match=r"named NNNN_description\.sql"):
        load_migrations(_write(tmp_path / "a", {"init.sql": ""}))
    with pytest.raises(MigrationError, match="share version 1"):
        load_migrations(_write(tmp_path / "b", {"0001_a.sql": "", "0001_b.sql": ""}))


async def test_two_pools_racing_apply_once(postgres_dsn: str, schema: str, tmp_path: Path) -> None:
    migrations = load_migrations(_write(tmp_path, {"0001_init.sql": INIT, "0002_e.sql": SECOND}))
    pools = [await create_pool(postgres_dsn, schema="public", max_size=2) for _ in range(2)]
    try:

        async def run(pool: asyncpg.Pool) -> list[int]:
            async with pool.acquire() as connection:
                return await apply_migrations(connection, schema, migrations)

        results = await asyncio.gather(*(run(pool) for pool in pools))
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))
    assert sorted(results) == [[], [1, 2]]
    rows = await _rows(postgres_dsn, f"SELECT count(*) AS n FROM {schema}.extensions")
    assert rows[0]["n"] == 1


async def test_two_processes_racing_apply_once(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    source = _write(tmp_path / "m", {"0001_init.sql": INIT, "0002_e.sql": SECOND})
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from callmesh_core.db import migrate
        applied = asyncio.run(migrate({postgres_dsn!r}, {schema!r}, Path({str(source)!r})))
        print(applied)
        """
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0, 0], [err.decode() for _, err in outputs]
    # Each file is applied by exactly one of them (which one may differ per file: the lock is
    # taken per migration, so the two may take turns).
    applied = [v for out, _ in outputs for v in json.loads(out.decode())]
    assert sorted(applied) == [1, 2]
    rows = await _rows(postgres_dsn, f"SELECT count(*) AS n FROM {schema}.extensions")
    assert rows[0]["n"] == 1


async def test_claim_event_once_per_group_and_only_if_committed(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    await migrate(postgres_dsn, schema, _write(tmp_path, {}))
    pool = await create_pool(postgres_dsn, schema=schema, max_size=2)
    try:
        async with pool.acquire() as connection:
            async with connection.transaction():
                assert await claim_event(connection, "cdr-writer", "e-1") is True
            async with connection.transaction():
                assert await claim_event(connection, "cdr-writer", "e-1") is False
            async with connection.transaction():
                assert await claim_event(connection, "crm-sync", "e-1") is True

            class EffectFailed(Exception):
                pass

            with pytest.raises(EffectFailed):
                async with connection.transaction():
                    assert await claim_event(connection, "cdr-writer", "e-2") is True
                    raise EffectFailed
            # The failed effect rolled its claim back, so the redelivery gets to apply it.
            async with connection.transaction():
                assert await claim_event(connection, "cdr-writer", "e-2") is True
    finally:
        await pool.close()


def test_migrations_load_from_a_package_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"callmesh_fake_{uuid.uuid4().hex[:8]}"
    root = tmp_path / package
    _write(root / "migrations", {"0001_init.sql": INIT, "0002_e.sql": SECOND})
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    migrations = load_migrations(package)
    assert [(m.version, m.name) for m in migrations] == [(1, "init"), (2, "e")]
    assert migrations[0].sql == INIT
    assert migrations[0].filename == "0001_init.sql"
