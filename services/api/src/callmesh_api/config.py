"""Settings of the api service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import Annotated, ClassVar

from callmesh_core.config import SECRET, NonBlank, Port, ServiceSettings
from pydantic import Field


class ApiSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/api/README.md for the list."""

    service_name: ClassVar[str] = "api"

    grpc_port: Port = Field(default=50058, description="gRPC listen port")
    http_port: Port = Field(default=9108, description="health/metrics port")

    api_http_host: NonBlank = Field(
        default="127.0.0.1", description="REST API and web cabinet listen address"
    )
    api_http_port: Port = Field(default=8080, description="REST API and web cabinet port")
    api_bootstrap_token: Annotated[str, Field(min_length=24)] | None = Field(
        default=None,
        description="a platform-admin API token ensured at start-up (first install, make run)",
        json_schema_extra=SECRET,
    )
    api_routing_address: NonBlank = Field(
        default="127.0.0.1:50053",
        description="routing's gRPC address, asked to validate routing configurations on save",
    )
