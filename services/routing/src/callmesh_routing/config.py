"""Settings of the routing service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import Annotated, ClassVar

from callmesh_core.config import HostPort, Port, Seconds, ServiceSettings
from pydantic import AfterValidator, Field


def _optional_host_port(value: str) -> str:
    value = value.strip()
    if value:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not host:port (or empty for off)")
    return value


OptionalHostPort = Annotated[str, AfterValidator(_optional_host_port)]


class RoutingSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/routing/README.md for the list."""

    service_name: ClassVar[str] = "routing"

    grpc_port: Port = Field(default=50053, description="gRPC listen port")
    # ValidateConfig receives whole routing documents (rate tables of a million prefixes).
    grpc_max_receive_mb: Annotated[int, Field(ge=1, le=2047)] = Field(
        default=512, description="largest gRPC message routing accepts, in MiB"
    )
    http_port: Port = Field(default=9103, description="health/metrics port")

    routing_provisioning_address: HostPort = Field(
        default="127.0.0.1:50058",
        description="host:port of the api's Provisioning gRPC (routing documents)",
    )
    routing_config_fetch_timeout_seconds: Seconds = Field(
        default=30.0,
        description="deadline of one GetRoutingConfig (documents with big rate tables are large)",
    )
    routing_config_wait_seconds: Seconds = Field(
        default=1.0,
        description="longest a Plan/Continue waits for its tenant's configuration to load "
        "before answering UNAVAILABLE (the load itself goes on)",
    )
    routing_config_retry_seconds: Seconds = Field(
        default=2.0,
        description="after a failed load, how long requests for that tenant fail at once "
        "instead of asking Provisioning again",
    )
    routing_config_max_message_mb: Annotated[int, Field(ge=4, le=2047)] = Field(
        default=512, description="largest routing document accepted from Provisioning, in MiB"
    )
    routing_crm_address: OptionalHostPort = Field(
        default="",
        description="host:port of crm-sync's Crm gRPC for ICM; empty = no CRM source",
    )
    routing_crm_timeout_seconds: Seconds = Field(
        default=0.3, description="deadline of one Crm.LookupResponsible"
    )
    routing_icm_history_timeout_seconds: Seconds = Field(
        default=0.3, description="deadline of one ICM history query in PostgreSQL"
    )
