"""Throw-away databases on the local cluster, for tests that run whole services.

A service started by a test applies its migrations to the database it is pointed at. Giving it
a database of its own keeps the test independent of `make run`'s data and of migrations a
developer is still editing in the shared `callmesh` database.
"""

from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from collections.abc import AsyncIterator

import asyncpg


@contextlib.asynccontextmanager
async def fresh_database(dsn: str, prefix: str = "callmesh_test") -> AsyncIterator[str]:
    """Create an empty database next to `dsn`'s, yield its DSN, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    parts = urllib.parse.urlsplit(dsn)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
