"""Settings of the media service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import ClassVar

from callmesh_core.config import NonBlank, Port, Seconds, ServiceSettings
from pydantic import Field, model_validator


class MediaSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/media/README.md for the list."""

    service_name: ClassVar[str] = "media"

    grpc_port: Port = Field(default=50052, description="gRPC listen port")
    http_port: Port = Field(default=9102, description="health/metrics port")

    # Media streams belong to calls; draining waits for them like sip-edge does (§5).
    drain_grace_seconds: Seconds = Field(
        default=3600.0, description="how long SIGTERM waits for active streams to end"
    )
    rtp_host: NonBlank = Field(default="127.0.0.1", description="RTP listen address")
    rtp_advertised_host: NonBlank | None = Field(
        default=None, description="address put in SDP; default: CALLMESH_RTP_HOST"
    )
    rtp_port_min: Port = Field(default=20000, description="lowest RTP port (even)")
    rtp_port_max: Port = Field(default=29999, description="highest RTP port")

    @model_validator(mode="after")
    def _check_rtp_range(self) -> MediaSettings:
        if self.rtp_port_min > self.rtp_port_max:
            raise ValueError(
                f"CALLMESH_RTP_PORT_MIN={self.rtp_port_min} is above "
                f"CALLMESH_RTP_PORT_MAX={self.rtp_port_max}"
            )
        return self
