"""Settings of the queue service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import Port, ServiceSettings
from pydantic import Field


class QueueSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/queue/README.md for the list."""

    service_name: ClassVar[str] = "queue"

    grpc_port: Port = Field(default=50054, description="gRPC listen port")
    http_port: Port = Field(default=9104, description="health/metrics port")
