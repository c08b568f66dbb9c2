"""Every service starts as `python -m callmesh_<service>`, serves health, and stops on SIGTERM.

The services run as real subprocesses on free ports, all eight at once (start-up is mostly
import time, so running them side by side keeps this file fast on two cores).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import grpc
import pytest
from callmesh_core.config import ServiceSettings, env_var_name, load_settings
from callmesh_devstack.databases import fresh_database
from callmesh_devstack.stack import Stack
from grpc_health.v1 import health_pb2, health_pb2_grpc

# (service, package) in ARCHITECTURE §6 port order: gRPC 50051+i, HTTP 9101+i.
SERVICES = [
    ("sip-edge", "callmesh_sip_edge"),
    ("media", "callmesh_media"),
    ("routing", "callmesh_routing"),
    ("queue", "callmesh_queue"),
    ("recording", "callmesh_recording"),
    ("notify", "callmesh_notify"),
    ("crm-sync", "callmesh_crm_sync"),
    ("api", "callmesh_api"),
]
NAMES = [name for name, _ in SERVICES]
PACKAGES = dict(SERVICES)
READY_TIMEOUT = 30.0  # generous: eight interpreters start at once on a 2-core machine
STOP_TIMEOUT = 5.0
KV_LINE = re.compile(r"^ts=\S+ level=(debug|info|warning|error|critical) service=\S+ ")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(**overrides: str) -> dict[str, str]:
    # The developer's own CALLMESH_* variables must not leak into what is being tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLMESH_")}
    env.update(overrides)
    return env


def _settings_type(package: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"{package}.config")
    settings_types = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    ]
    assert len(settings_types) == 1, settings_types
    return settings_types[0]


@pytest.mark.parametrize(("index", "name"), list(enumerate(NAMES)))
def test_default_ports_follow_the_architecture(index: int, name: str) -> None:
    settings = load_settings(_settings_type(PACKAGES[name]), {})
    assert settings.service_name == name
    assert (settings.grpc_port, settings.http_port) == (50051 + index, 9101 + index)


@dataclass
class StartOutcome:
    ready_after: float | None = None
    readyz_status: int | None = None
    health_status: int | None = None
    stop_after: float | None = None
    exit_code: int | None = None
    stderr_lines: list[str] = field(default_factory=list)


async def _readyz(port: int) -> int | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
            session.get(f"http://127.0.0.1:{port}/readyz") as response,
        ):
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _health(port: int) -> int | None:
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
            return int(response.status)
    except grpc.aio.AioRpcError:
        return None


def _port_variables(package: str) -> dict[str, str]:
    """A free port for every `CALLMESH_*_PORT` the service reads (gRPC, HTTP, the api's REST,
    SIP once wired), so the test never collides with `make run` or a parallel test."""
    return {
        env_var_name(field_name): str(_free_port())
        for field_name in _settings_type(package).model_fields
        if field_name.endswith("_port")
    }


async def _start_and_stop(package: str, stack_env: dict[str, str]) -> StartOutcome:
    ports = _port_variables(package)
    grpc_port, http_port = int(ports["CALLMESH_GRPC_PORT"]), int(ports["CALLMESH_HTTP_PORT"])
    outcome = StartOutcome()
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        package,
        env=_environment(**ports, **stack_env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        while time.monotonic() - began < READY_TIMEOUT and process.returncode is None:
            outcome.readyz_status = await _readyz(http_port)
            if outcome.readyz_status == 200:
                outcome.health_status = await _health(grpc_port)
                outcome.ready_after = time.monotonic() - began
                break
            await asyncio.sleep(0.1)
        if process.returncode is None:
            stop_began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                outcome.stop_after = time.monotonic() - stop_began
            except TimeoutError:
                pass
        outcome.exit_code = process.returncode
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.stderr is not None
        outcome.stderr_lines = (await process.stderr.read()).decode().splitlines()
    return outcome


@pytest.fixture(scope="module")
async def start_outcomes(devstack: Stack) -> AsyncIterator[dict[str, StartOutcome]]:
    # Services that keep state (the api) need the real PostgreSQL and Kafka to become ready.
    # They get a database of their own, so neither `make run`'s data nor a developer's edited
    # migrations in the shared `callmesh` database decide whether this test passes.
    async with fresh_database(devstack.postgres.dsn, "callmesh_start") as dsn:
        stack_env = {**devstack.env(), "CALLMESH_POSTGRES_DSN": dsn}
        outcomes = await asyncio.gather(
            *(_start_and_stop(package, stack_env) for _, package in SERVICES)
        )
        yield dict(zip(NAMES, outcomes, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_service_serves_health_and_stops_cleanly_on_sigterm(
    name: str, start_outcomes: dict[str, StartOutcome]
) -> None:
    outcome = start_outcomes[name]
    log = "\n".join(outcome.stderr_lines)
    assert outcome.readyz_status == 200, log
    assert outcome.health_status == health_pb2.HealthCheckResponse.SERVING, log
    assert outcome.exit_code == 0, log
    assert outcome.stop_after is not None and outcome.stop_after < STOP_TIMEOUT
    # Logs are structured, one line per event, and tell the story in order.
    assert all(KV_LINE.match(line) for line in outcome.stderr_lines), log
    events = [re.search(r" event=(\S+)", line).group(1) for line in outcome.stderr_lines]  # type: ignore[union-attr]
    # A service may log its own work (migrations, listeners, consuming what the shared test
    # broker already holds) around these; the lifecycle itself is in order and ends the log.
    lifecycle = [e for e in events if e in ("ready", "draining", "stopped")]
    assert lifecycle == ["ready", "draining", "stopped"], log
    assert events[-1] == "stopped", log
    ready_line = outcome.stderr_lines[events.index("ready")]
    assert all(f" service={name} " in line for line in outcome.stderr_lines), log
    assert " event_loop=uvloop " in ready_line


async def _run_with(package: str, **variables: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        package,
        env=_environment(**variables),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), READY_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


@pytest.fixture(scope="module")
async def bad_port_outcomes() -> dict[str, tuple[int, str, str]]:
    results = await asyncio.gather(
        *(_run_with(package, CALLMESH_GRPC_PORT="abc") for _, package in SERVICES)
    )
    return dict(zip(NAMES, results, strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_bad_variable_stops_the_service_with_one_line(
    name: str, bad_port_outcomes: dict[str, tuple[int, str, str]]
) -> None:
    exit_code, stdout, stderr = bad_port_outcomes[name]
    assert exit_code == 2
    assert stdout == ""
    assert stderr.splitlines() == [
        f"callmesh-{name}: CALLMESH_GRPC_PORT='abc': not a valid port (integer 1-65535)"
    ]


@pytest.mark.parametrize("busy", ["CALLMESH_GRPC_PORT", "CALLMESH_HTTP_PORT"])
async def test_a_busy_port_fails_start_up_with_a_logged_reason(busy: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = _port_variables("callmesh_routing")
        ports[busy] = str(taken.getsockname()[1])
        exit_code, _, stderr = await _run_with("callmesh_routing", **ports)
    assert exit_code == 1
    (line,) = [line for line in stderr.splitlines() if "event=startup_failed" in line]
    assert "level=error" in line
    assert "Traceback" not in stderr
