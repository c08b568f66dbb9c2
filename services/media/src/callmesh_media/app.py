"""Wiring of the media service: the one place that builds its adapters and passes them in.

Plumbing only for now: the runner serves gRPC health and reflection and the HTTP side port
(/healthz, /readyz, /metrics) and drains on SIGTERM. The service's own servicers, consumers and
stores are registered in `build` when its features arrive (issue 4).
"""

from __future__ import annotations

from callmesh_core.service import ServiceContext, run_service

from callmesh_media.config import MediaSettings


async def build(ctx: ServiceContext[MediaSettings]) -> None:
    """Register servicers, readiness checks and drain/close hooks on `ctx`.

    Nothing to register yet: only the shared plumbing runs.
    """


def main() -> None:
    run_service(MediaSettings, build)
