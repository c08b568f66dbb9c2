"""Across services: an admin saves a routing configuration through the api's REST API, routing
validates it (every problem listed, nothing stored when invalid), and routing then decides calls
from the stored document it reads back through Provisioning. Both services run as real
processes, as `make run` runs them, against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from callmesh.common.v1 import common_pb2
from callmesh.routing.v1 import routing_pb2, routing_pb2_grpc
from callmesh_devstack.databases import fresh_database
from callmesh_devstack.stack import Stack

DOCUMENT = Path(__file__).resolve().parents[1] / (
    "services/routing/tests/data/routing_document.json"
)
MAIN_DID = "+78123090000"
BLOCKED_CALLER = "+79001234567"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Platform:
    rest: str
    token: str
    routing: routing_pb2_grpc.RoutingStub


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A service as its own process, its log kept for the failure message."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def _ready(port: int, process: subprocess.Popen[bytes], name: str, log_dir: Path) -> None:
    deadline = time.monotonic() + 40
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, (
                f"{name} exited with {process.returncode}: "
                + (log_dir / f"{name}.log").read_text()[-2000:]
            )
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{name} not ready in 40 s")


@pytest.fixture
async def platform(devstack: Stack, tmp_path: Path) -> AsyncIterator[Platform]:
    async with fresh_database(devstack.postgres.dsn) as dsn:
        async for running in _platform({**devstack.env(), "CALLMESH_POSTGRES_DSN": dsn}, tmp_path):
            yield running


async def _platform(stack_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Platform]:
    token = "cm_test_" + secrets.token_urlsafe(24)
    api_grpc, api_http, api_rest = _free_port(), _free_port(), _free_port()
    routing_grpc, routing_http = _free_port(), _free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_")}
    base.update(stack_env)
    api_env = {
        **base,
        "CALLMESH_GRPC_PORT": str(api_grpc),
        "CALLMESH_HTTP_PORT": str(api_http),
        "CALLMESH_API_HTTP_PORT": str(api_rest),
        "CALLMESH_API_BOOTSTRAP_TOKEN": token,
        "CALLMESH_API_ROUTING_ADDRESS": f"127.0.0.1:{routing_grpc}",
    }
    routing_env = {
        **base,
        "CALLMESH_GRPC_PORT": str(routing_grpc),
        "CALLMESH_HTTP_PORT": str(routing_http),
        "CALLMESH_ROUTING_PROVISIONING_ADDRESS": f"127.0.0.1:{api_grpc}",
    }
    processes = [
        _spawn("callmesh_api", api_env, tmp_path / "api.log"),
        _spawn("callmesh_routing", routing_env, tmp_path / "routing.log"),
    ]
    try:
        await _ready(api_http, processes[0], "api", tmp_path)
        await _ready(routing_http, processes[1], "routing", tmp_path)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{routing_grpc}") as channel:
            yield Platform(
                f"http://127.0.0.1:{api_rest}", token, routing_pb2_grpc.RoutingStub(channel)
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _call(
    platform: Platform, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any, Any]:
    auth = {"Authorization": f"Bearer {platform.token}"}
    async with (
        aiohttp.ClientSession(headers=auth) as session,
        session.request(
            method, f"{platform.rest}/api/v1{path}", json=body, headers=headers
        ) as response,
    ):
        return response.status, await response.json(), response.headers


def _kinds(reply: routing_pb2.PlanReply) -> list[str]:
    return [verb.WhichOneof("kind") or "" for verb in reply.verbs]


def _inbound(tenant_id: str, caller: str) -> routing_pb2.CallContext:
    return routing_pb2.CallContext(
        call_id=str(uuid.uuid4()),
        tenant_id=tenant_id,
        direction=common_pb2.CALL_DIRECTION_INBOUND,
        caller_number=caller,
        callee_number=MAIN_DID,
        did=MAIN_DID,
    )


async def test_saved_routing_configuration_is_validated_by_routing_and_then_drives_calls(
    platform: Platform,
) -> None:
    status, tenant, _ = await _call(
        platform, "POST", "/tenants", {"slug": f"rc-{uuid.uuid4().hex[:8]}", "name": "RC"}
    )
    assert status == 201, tenant
    path = f"/tenants/{tenant['id']}/routing-config"
    document = json.loads(DOCUMENT.read_text())

    # A broken document: routing lists every problem and the api stores nothing.
    broken = copy.deepcopy(document)
    broken["default_scenario"] = "no-such-scenario"
    broken["scenarios"][0]["start"] = "nowhere"
    status, problem, _ = await _call(platform, "PUT", path, {"document": broken})
    assert status == 422, problem
    assert len(problem["errors"]) >= 2
    assert all(e["pointer"].startswith("/document/") for e in problem["errors"])
    assert "no-such-scenario" in problem["detail"] and "nowhere" in problem["detail"]
    assert (await _call(platform, "GET", path))[0] == 404

    status, saved, headers = await _call(platform, "PUT", path, {"document": document})
    assert status == 200, saved
    assert headers["ETag"] == '"1"' and saved["document"] == document

    # Routing reads the stored document back through Provisioning and decides with it.
    blocked = await platform.routing.Plan(
        routing_pb2.PlanRequest(call=_inbound(tenant["id"], BLOCKED_CALLER)), timeout=10
    )
    assert _kinds(blocked) == ["hangup"] and blocked.verbs[0].hangup.sip_status == 603
    caller = await platform.routing.Plan(
        routing_pb2.PlanRequest(call=_inbound(tenant["id"], "+78125550000")), timeout=10
    )
    assert _kinds(caller)[:2] == ["answer", "play"]
    assert "office-hours" in caller.reason and caller.scenario_id == "main"

    # A stale If-Match loses against the stored version.
    status, _, _ = await _call(platform, "PUT", path, {"document": document}, **{"If-Match": '"7"'})
    assert status == 412
