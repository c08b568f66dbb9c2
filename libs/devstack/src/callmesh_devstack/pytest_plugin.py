"""pytest fixtures for the real local PostgreSQL and Kafka.

They start the servers on demand the first time a test asks for them, reuse servers that are
already up (e.g. after `python -m callmesh_devstack up`), and at the end of the session stop only
what the session itself started (set CALLMESH_DEVSTACK_KEEP=1 to leave them running).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .stack import Stack


@pytest.fixture(scope="session")
def devstack() -> Iterator[Stack]:
    stack = Stack.from_env()
    stack.up()
    try:
        yield stack
    finally:
        if os.environ.get("CALLMESH_DEVSTACK_KEEP") != "1":
            stack.down(only_started=True)


@pytest.fixture(scope="session")
def postgres_dsn(devstack: Stack) -> str:
    """DSN of database `callmesh` on the local cluster; tests create their own schemas."""
    return devstack.postgres.dsn


@pytest.fixture(scope="session")
def kafka_bootstrap(devstack: Stack) -> str:
    """bootstrap.servers of the local broker; tests use their own, uniquely named topics."""
    return devstack.kafka.bootstrap
