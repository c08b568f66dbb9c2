"""Settings of the routing service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import Port, ServiceSettings
from pydantic import Field


class RoutingSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/routing/README.md for the list."""

    service_name: ClassVar[str] = "routing"

    grpc_port: Port = Field(default=50053, description="gRPC listen port")
    http_port: Port = Field(default=9103, description="health/metrics port")
