"""Settings of the media service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from pathlib import Path
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
        default=3600.0, description="how long SIGTERM waits for active endpoints to end"
    )
    media_rtp_host: NonBlank = Field(default="127.0.0.1", description="RTP listen address")
    media_advertised_address: NonBlank | None = Field(
        default=None, description="address put in SDP c=; default: CALLMESH_MEDIA_RTP_HOST"
    )
    media_rtp_port_min: Port = Field(default=20000, description="lowest RTP port (even)")
    media_rtp_port_max: Port = Field(default=29999, description="highest RTP/RTCP port")
    media_capacity_endpoints: int = Field(
        default=2000, ge=1, description="endpoints this replica is sized for (GetLoad)"
    )
    media_rtp_timeout_seconds: Seconds = Field(
        default=30.0, description="RtpTimeout after this long without RTP (0 = never)"
    )
    media_learning_packets: int = Field(
        default=10, ge=1, description="packets during which a leg may learn its remote port"
    )
    media_learning_seconds: Seconds = Field(
        default=3.0, description="seconds during which a leg may learn its remote port"
    )
    media_sounds_dir: Path = Field(
        default=Path("/usr/share/asterisk/sounds"),
        description="system prompts, one directory per language (en_US_f_Allison, ru, ...)",
    )
    media_moh_dir: Path = Field(
        default=Path("/usr/share/asterisk/moh"),
        description="music on hold: files of class `default`, subdirectories per class",
    )
    media_tenant_prompts_dir: Path = Field(
        default=Path(".local/media/prompts"),
        description="tenant-uploaded prompts as <dir>/<tenant>/<prompt id>.wav",
    )
    media_default_language: NonBlank = Field(
        default="en", description="language of system prompts when a request names none"
    )
    media_recording_dir: Path = Field(
        default=Path(".local/media/recordings"),
        description="where recordings are written (storage keys are paths below it)",
    )

    @model_validator(mode="after")
    def _check_rtp_range(self) -> MediaSettings:
        if self.media_rtp_port_min > self.media_rtp_port_max - 1:
            raise ValueError(
                f"CALLMESH_MEDIA_RTP_PORT_MIN={self.media_rtp_port_min} must be below "
                f"CALLMESH_MEDIA_RTP_PORT_MAX={self.media_rtp_port_max} (RTP and RTCP need a pair)"
            )
        return self

    @property
    def advertised_address(self) -> str:
        return self.media_advertised_address or self.media_rtp_host
