"""Settings of the recording service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import Port, ServiceSettings
from pydantic import Field


class RecordingSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/recording/README.md for the list."""

    service_name: ClassVar[str] = "recording"

    grpc_port: Port = Field(default=50055, description="gRPC listen port")
    http_port: Port = Field(default=9105, description="health/metrics port")
