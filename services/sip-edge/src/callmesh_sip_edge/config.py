"""Settings of the sip-edge service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import HostPort, NonBlank, Port, Seconds, ServiceSettings
from pydantic import Field


class SipEdgeSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/sip-edge/README.md for the list."""

    service_name: ClassVar[str] = "sip-edge"

    grpc_port: Port = Field(default=50051, description="gRPC listen port")
    http_port: Port = Field(default=9101, description="health/metrics port")

    # Calls live for minutes to hours; draining waits for them (ARCHITECTURE §5).
    drain_grace_seconds: Seconds = Field(
        default=3600.0, description="how long SIGTERM waits for active calls to end"
    )
    sip_host: NonBlank = Field(default="127.0.0.1", description="SIP listen address")
    sip_port: Port = Field(default=5060, description="SIP listen port (UDP and TCP)")
    sip_advertised_host: NonBlank | None = Field(
        default=None, description="address put in Via/Contact/SDP; default: CALLMESH_SIP_HOST"
    )
    routing_target: HostPort = Field(
        default="127.0.0.1:50053", description="gRPC address of routing"
    )
    media_target: HostPort = Field(default="127.0.0.1:50052", description="gRPC address of media")
    queue_target: HostPort = Field(default="127.0.0.1:50054", description="gRPC address of queue")
