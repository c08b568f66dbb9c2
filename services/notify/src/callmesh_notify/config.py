"""Settings of the notify service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import Port, ServiceSettings
from pydantic import Field


class NotifySettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/notify/README.md for the list."""

    service_name: ClassVar[str] = "notify"

    grpc_port: Port = Field(default=50056, description="gRPC listen port")
    http_port: Port = Field(default=9106, description="health/metrics port")
