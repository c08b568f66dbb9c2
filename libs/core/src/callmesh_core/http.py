"""The HTTP side port every service serves: `/healthz`, `/readyz`, `/metrics`.

- `/healthz`: the process is alive and its event loop answers (Kubernetes liveness).
- `/readyz`: 200 when started, not draining, and every readiness check passes; 503 otherwise.
  The JSON body lists each check so an operator sees *why* a replica is not ready.
- `/metrics`: Prometheus text exposition of the service's own `CollectorRegistry`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when fine, or a short reason why the replica should not take traffic."""

CHECK_TIMEOUT_SECONDS = 1.0


@dataclass
class Readiness:
    """Whether this replica should receive traffic, and the checks that decide it."""

    started: bool = False
    draining: bool = False
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    async def evaluate(self) -> tuple[bool, dict[str, object]]:
        results: dict[str, object] = {}
        ok = True
        for name, check in self.checks.items():
            try:
                reason = await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            except TimeoutError:
                reason = f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            results[name] = {"ok": reason is None, **({"reason": reason} if reason else {})}
            ok = ok and reason is None
        if self.draining:
            status = "draining"
        elif not self.started:
            status = "starting"
        else:
            status = "ready" if ok else "not_ready"
        return status == "ready", {"status": status, "checks": results}


class HealthHttpServer:
    """aiohttp server for the health and metrics endpoints on the service's side port."""

    def __init__(
        self, *, host: str, port: int, readiness: Readiness, registry: CollectorRegistry
    ) -> None:
        self.host = host
        self.requested_port = port
        self.readiness = readiness
        self.registry = registry
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, body = await self.readiness.evaluate()
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # Collecting is synchronous and cheap for a service's own registry.
        payload = generate_latest(self.registry)
        return web.Response(body=payload, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port)
        await site.start()
        addresses = self._runner.addresses
        self.port = int(addresses[0][1]) if addresses else self.requested_port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
