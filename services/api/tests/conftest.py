"""A real PostgreSQL schema per test module and the REST API served over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from callmesh_api.config_service import ConfigService
from callmesh_api.rest import build_rest_app
from callmesh_api.store import ConfigStore
from callmesh_core.db import create_pool, migrate

MIGRATIONS = Path(__file__).resolve().parents[1] / "src" / "callmesh_api" / "migrations"
PLATFORM_TOKEN = "cm_test_platform_admin_token"


@pytest.fixture(scope="module")
async def api_pool(postgres_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    schema = f"api_test_{uuid.uuid4().hex[:10]}"
    await migrate(postgres_dsn, schema, MIGRATIONS)
    pool = await create_pool(postgres_dsn, schema=schema, min_size=1, max_size=5)
    try:
        yield pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def config_service(api_pool: asyncpg.Pool) -> ConfigService:
    service = ConfigService(ConfigStore(api_pool))
    await service.ensure_platform_token(PLATFORM_TOKEN)
    return service


@pytest.fixture(scope="module")
async def client(config_service: ConfigService) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(build_rest_app(config_service))) as http:
        yield http


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    """Terse helpers over the real HTTP client for the tests."""

    def __init__(self, http: TestClient[Any, Any]) -> None:
        self.http = http

    async def call(
        self, method: str, path: str, token: str, json: Any = None, **headers: str
    ) -> tuple[int, Any, Any]:
        response = await self.http.request(
            method, f"/api/v1{path}", json=json, headers={**auth(token), **headers}
        )
        body = await response.json() if response.content_type.endswith("json") else None
        return response.status, body, response.headers

    async def tenant(self, slug: str) -> tuple[str, str]:
        """A new tenant and a tenant-admin token for it."""
        status, body, _ = await self.call(
            "POST", "/tenants", PLATFORM_TOKEN, {"slug": slug, "name": slug.title()}
        )
        assert status == 201, body
        tenant_id = body["id"]
        status, token, _ = await self.call(
            "POST", f"/tenants/{tenant_id}/tokens", PLATFORM_TOKEN, {"name": "admin"}
        )
        assert status == 201, token
        return tenant_id, token["token"]


@pytest.fixture(scope="module")
def api(client: TestClient[Any, Any]) -> Api:
    return Api(client)
