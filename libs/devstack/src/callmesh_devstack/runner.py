"""`make run`: the whole platform as local processes with prefixed logs.

Starts PostgreSQL and Kafka (reusing them when already up), then every service as
`python -m callmesh_<name>`, waits until each answers `/readyz`, prints a status table, and on
Ctrl-C (or SIGTERM) drains the services with SIGTERM, then stops the servers it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass

import aiohttp

from .demo import DemoError, provision_demo
from .procs import DevstackError, pid_alive, terminate
from .stack import Stack


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    grpc_port: int
    http_port: int

    @property
    def module(self) -> str:
        return "callmesh_" + self.name.replace("-", "_")


# ARCHITECTURE §6: gRPC 50051-50058 and HTTP 9101-9108, in this order.
SERVICES = [
    ServiceSpec(name, 50051 + index, 9101 + index)
    for index, name in enumerate(
        ["sip-edge", "media", "routing", "queue", "recording", "notify", "crm-sync", "api"]
    )
]
_WIDTH = max(len(s.name) for s in SERVICES)
API_REST_PORT = 8080
SIP_PORT = 5060
RTP_PORTS = (20000, 29999)


@dataclass
class RunningService:
    spec: ServiceSpec
    process: asyncio.subprocess.Process
    ready_after: float | None = None


def _say(text: str) -> None:
    print(f"{'make run':<{_WIDTH}} | {text}", flush=True)


async def _pump(name: str, stream: asyncio.StreamReader) -> None:
    prefix = f"{name:<{_WIDTH}} | "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace").rstrip() + "\n")
        sys.stdout.flush()


async def _wait_ready(service: RunningService, deadline: float, started: float) -> bool:
    url = f"http://127.0.0.1:{service.spec.http_port}/readyz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < deadline:
            if service.process.returncode is not None:
                return False
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url) as response:
                    if response.status == 200:
                        service.ready_after = time.monotonic() - started
                        return True
            await asyncio.sleep(0.2)
    return False


def _kill_leftovers(pidfile: os.PathLike[str]) -> None:
    """A previous `make run` killed with SIGKILL cannot clean up; do it for it now."""
    with contextlib.suppress(OSError):
        for line in open(pidfile).read().split():  # noqa: SIM115 - tiny file
            pid = int(line)
            if pid_alive(pid):
                terminate(pid, 5.0)
    with contextlib.suppress(OSError):
        os.unlink(pidfile)


async def _run(stack: Stack, port_offset: int, ready_timeout: float) -> int:
    started = time.monotonic()
    pidfile = stack.layout.run / "services.pids"
    _kill_leftovers(pidfile)
    _say("starting PostgreSQL and Kafka under .local/ (logs in .local/logs/)")
    await asyncio.to_thread(stack.up)
    _say(f"postgres {stack.postgres.dsn}  kafka {stack.kafka.bootstrap}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    services: list[RunningService] = []
    pumps: list[asyncio.Task[None]] = []
    exit_code = 0
    # A platform-admin token for this run only: the supervisor provisions the demo with it.
    admin_token = "cm_run_" + secrets.token_urlsafe(24)
    rest_port = API_REST_PORT + port_offset
    try:
        addresses = _service_addresses(port_offset)
        for spec in SERVICES:
            env = {
                **os.environ,
                **stack.env(),
                **addresses,
                "CALLMESH_GRPC_PORT": str(spec.grpc_port + port_offset),
                "CALLMESH_HTTP_PORT": str(spec.http_port + port_offset),
                "CALLMESH_API_HTTP_PORT": str(rest_port),
                "CALLMESH_API_BOOTSTRAP_TOKEN": admin_token,
                "PYTHONUNBUFFERED": "1",
            }
            spec = ServiceSpec(
                spec.name, spec.grpc_port + port_offset, spec.http_port + port_offset
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                spec.module,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                # Own session: the terminal's Ctrl-C reaches only us, and we drain in order.
                start_new_session=True,
            )
            services.append(RunningService(spec, process))
            assert process.stdout is not None
            pumps.append(asyncio.create_task(_pump(spec.name, process.stdout)))
        pidfile.write_text("".join(f"{s.process.pid}\n" for s in services))

        deadline = time.monotonic() + ready_timeout
        ready = await asyncio.gather(*(_wait_ready(s, deadline, started) for s in services))
        if not all(ready):
            failed = [s.spec.name for s, ok in zip(services, ready, strict=True) if not ok]
            _say(f"not ready within {ready_timeout:.0f}s: {', '.join(failed)}; stopping")
            return 1
        _print_table(services, stack, rest_port)
        try:
            demo = await provision_demo(f"http://127.0.0.1:{rest_port}", admin_token)
        except (DemoError, aiohttp.ClientError, TimeoutError) as exc:
            _say(f"demo tenant not provisioned: {exc}; stopping")
            return 1
        _say(f"demo tenant: SIP domain {demo.sip_domain}, DID {demo.did}")
        for extension, password in demo.passwords.items():
            _say(f"  extension {extension}  password {password}")
        _say(
            f"register a softphone: user 101, domain {demo.sip_domain}, proxy "
            f"127.0.0.1:{SIP_PORT + port_offset}; 101-103 call each other, the DID rings all three"
        )
        _say(f"REST API: http://127.0.0.1:{rest_port}/api/v1/docs  token {admin_token}")
        _say(f"all ready in {time.monotonic() - started:.1f}s — press Ctrl-C to stop")

        exits = [asyncio.create_task(s.process.wait()) for s in services]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *exits], return_when=asyncio.FIRST_COMPLETED)
        if stopper not in done:
            dead = [s.spec.name for s in services if s.process.returncode is not None]
            _say(f"service exited unexpectedly: {', '.join(dead)}; stopping the rest")
            exit_code = 1
        stopper.cancel()
        for task in exits:
            task.cancel()
        return exit_code
    finally:
        _say("stopping services (SIGTERM, then wait for them to drain)")
        for service in services:
            if service.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    service.process.send_signal(signal.SIGTERM)
        for service in services:
            try:
                await asyncio.wait_for(service.process.wait(), timeout=20)
            except TimeoutError:
                _say(f"{service.spec.name} did not stop in 20s; killing it")
                service.process.kill()
                await service.process.wait()
        for pump in pumps:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, timeout=2)
        pidfile.unlink(missing_ok=True)
        if stack.started:
            _say(f"stopping {' and '.join(stack.started)}")
        await asyncio.to_thread(stack.down, True)
        _say("stopped; nothing left running")


def _service_addresses(port_offset: int) -> dict[str, str]:
    """Where each service finds the others, and the SIP/RTP ports, shifted with the offset so
    a second copy (e.g. the test of this supervisor) never talks to the first one."""

    def grpc(name: str) -> str:
        spec = next(s for s in SERVICES if s.name == name)
        return f"127.0.0.1:{spec.grpc_port + port_offset}"

    return {
        "CALLMESH_SIP_PORT": str(SIP_PORT + port_offset),
        "CALLMESH_SIP_EDGE_PROVISIONING_ADDRESS": grpc("api"),
        "CALLMESH_SIP_EDGE_ROUTING_ADDRESS": grpc("routing"),
        "CALLMESH_MEDIA_TARGET": grpc("media"),
        "CALLMESH_QUEUE_TARGET": grpc("queue"),
        "CALLMESH_ROUTING_PROVISIONING_ADDRESS": grpc("api"),
        "CALLMESH_API_ROUTING_ADDRESS": grpc("routing"),
        "CALLMESH_QUEUE_ADVERTISE_ADDRESS": grpc("queue"),
        "CALLMESH_MEDIA_RTP_PORT_MIN": str(RTP_PORTS[0] + port_offset),
        "CALLMESH_MEDIA_RTP_PORT_MAX": str(RTP_PORTS[1] + port_offset),
    }


def _print_table(services: list[RunningService], stack: Stack, rest_port: int) -> None:
    rows = [("service", "pid", "grpc", "http", "ready")]
    rows += [
        (
            s.spec.name,
            str(s.process.pid),
            f"127.0.0.1:{s.spec.grpc_port}",
            f"127.0.0.1:{s.spec.http_port}",
            f"{s.ready_after or 0:.1f}s",
        )
        for s in services
    ]
    rows.append(("api-rest", "-", "-", f"127.0.0.1:{rest_port}", "-"))
    rows.append(("postgres", "-", stack.postgres.dsn, "-", "-"))
    rows.append(("kafka", "-", stack.kafka.bootstrap, "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def run_platform(stack: Stack, port_offset: int = 0, ready_timeout: float = 60.0) -> int:
    try:
        import uvloop

        return uvloop.run(_run(stack, port_offset, ready_timeout))
    except DevstackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
