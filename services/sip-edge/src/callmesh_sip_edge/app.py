"""Wiring of the sip-edge service: the one place that builds its adapters and passes them in.

Plumbing only for now: the runner serves gRPC health and reflection and the HTTP side port
(/healthz, /readyz, /metrics) and drains on SIGTERM. The service's own servicers, consumers and
stores are registered in `build` when its features arrive (issue 3).
"""

from __future__ import annotations

from callmesh_core.service import ServiceContext, run_service

from callmesh_sip_edge.config import SipEdgeSettings


async def build(ctx: ServiceContext[SipEdgeSettings]) -> None:
    """Register servicers, readiness checks and drain/close hooks on `ctx`.

    Nothing to register yet: only the shared plumbing runs.
    """


def main() -> None:
    run_service(SipEdgeSettings, build)
