"""Settings of the queue service: the common `CALLMESH_*` set plus its own."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from callmesh_core.config import Port, Seconds, ServiceSettings
from pydantic import AfterValidator, Field


def _check_schema(value: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise ValueError("a plain lowercase PostgreSQL schema name")
    return value


def _check_lease(value: float) -> float:
    if value < 0.3:
        raise ValueError("at least 0.3 seconds (the lease is renewed every third of it)")
    return value


class QueueSettings(ServiceSettings):
    """Read from `CALLMESH_*` variables; see services/queue/README.md for the list."""

    service_name: ClassVar[str] = "queue"

    grpc_port: Port = Field(default=50054, description="gRPC listen port")
    http_port: Port = Field(default=9104, description="health/metrics port")

    queue_lease_seconds: Annotated[Seconds, AfterValidator(_check_lease)] = Field(
        default=3.0,
        description="how long a replica's ownership of a tenant's queues lasts unrenewed"
        " (renewed every third of it)",
    )
    queue_rejoin_grace_seconds: Seconds = Field(
        default=30.0,
        description="how long a waiting caller whose stream broke keeps their place"
        " without re-joining",
    )
    queue_snapshot_every: Annotated[int, Field(ge=1)] = Field(
        default=500, description="journal entries between two snapshots of a tenant's state"
    )
    queue_advertise_address: str = Field(
        default="",
        description="host:port other replicas send the edge to for this replica's queues"
        " (default: CALLMESH_GRPC_HOST:CALLMESH_GRPC_PORT)",
    )
    queue_db_schema: Annotated[str, AfterValidator(_check_schema)] = Field(
        default="queue", description="PostgreSQL schema of the queue service"
    )
