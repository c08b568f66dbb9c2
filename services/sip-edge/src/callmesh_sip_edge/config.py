"""Settings of the sip-edge service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

from typing import Annotated, ClassVar

from callmesh_core.config import SECRET, HostPort, NonBlank, Port, Seconds, ServiceSettings
from pydantic import Field, field_validator

PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]


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
    sip_edge_provisioning_address: HostPort = Field(
        default="127.0.0.1:50058", description="gRPC address of Provisioning (the api)"
    )
    sip_edge_routing_address: HostPort = Field(
        default="127.0.0.1:50053", description="gRPC address of routing"
    )
    sip_edge_routing_timeout_seconds: PositiveFloat = Field(
        default=2.0,
        description="deadline of Routing.Plan/Continue; past it the caller gets 503 + Retry-After",
    )
    media_target: HostPort = Field(default="127.0.0.1:50052", description="gRPC address of media")
    queue_target: HostPort = Field(default="127.0.0.1:50054", description="gRPC address of queue")
    sip_edge_nonce_secret: Annotated[str, Field(min_length=16)] | None = Field(
        default=None,
        description="digest nonce key shared by all replicas; unset: random per process",
        json_schema_extra=SECRET,
    )
    sip_edge_digest_algorithms: NonBlank = Field(
        default="SHA-256,MD5",
        description="digest challenges offered, in order (RFC 8760: strongest first); clients "
        "that only read the first challenge (sipp 3.6) need MD5 first",
    )
    sip_edge_directory_ttl_seconds: Seconds = Field(
        default=300.0, description="longest a cached tenant/user is trusted without an event"
    )
    registration_default_expires: PositiveInt = Field(
        default=3600, description="lifetime of a contact registered without Expires (seconds)"
    )
    registration_min_expires: PositiveInt = Field(
        default=60, description="shorter requested lifetimes get 423 with Min-Expires"
    )
    registration_max_expires: PositiveInt = Field(
        default=7200, description="longer requested lifetimes are shortened to this"
    )
    registration_max_contacts: PositiveInt = Field(
        default=10, description="contacts per user when the user sets no max_contacts"
    )
    registration_sweep_seconds: Seconds = Field(
        default=10.0, description="how often expired contacts are removed and announced"
    )
    register_rate_per_second: PositiveFloat = Field(
        default=5.0, description="REGISTERs per second per source address (token bucket)"
    )
    register_burst: PositiveInt = Field(default=20, description="REGISTER bucket size")
    invite_rate_per_second: PositiveFloat = Field(
        default=5.0, description="INVITEs per second per source address (token bucket)"
    )
    invite_burst: PositiveInt = Field(default=20, description="INVITE bucket size")
    auth_failure_window_seconds: Seconds = Field(
        default=300.0, description="failed authentications are counted over this window"
    )
    auth_source_ban_failures: PositiveInt = Field(
        default=20, description="failures from one address that ban it"
    )
    auth_source_ban_seconds: Seconds = Field(default=600.0, description="length of a ban")
    auth_account_lockout_failures: PositiveInt = Field(
        default=10, description="failures for one account (from any address) that lock it"
    )
    auth_account_lockout_seconds: Seconds = Field(
        default=900.0, description="length of an account lockout"
    )

    @field_validator("sip_edge_digest_algorithms")
    @classmethod
    def _known_algorithms(cls, value: str) -> str:
        names = [part.strip().upper() for part in value.split(",") if part.strip()]
        if not names or any(name not in ("MD5", "SHA-256") for name in names):
            raise ValueError("a comma-separated list of SHA-256 and MD5")
        return ",".join(names)
