"""Settings of the crm-sync service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import Port, ServiceSettings
from pydantic import Field


class CrmSyncSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/crm-sync/README.md for the list."""

    service_name: ClassVar[str] = "crm-sync"

    grpc_port: Port = Field(default=50057, description="gRPC listen port")
    http_port: Port = Field(default=9107, description="health/metrics port")
