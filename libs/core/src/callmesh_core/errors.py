"""Domain errors shared by every service, each tied to the gRPC status it becomes at the edge.

Service code raises these instead of touching gRPC: the server interceptor in
`callmesh_core.grpc_server` turns them into status codes, so domain code stays free of transport
details and the mapping lives in exactly one place.
"""

from __future__ import annotations

import grpc


class DomainError(Exception):
    """Base of the errors a service may let escape to the gRPC edge on purpose."""

    status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request itself is wrong, whatever the state of the system."""

    status_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    """The thing the request names does not exist."""

    status_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    """The thing the request would create exists already."""

    status_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The system is not in the state the request needs (e.g. call not answered yet)."""

    status_code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""

    status_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(DomainError):
    """A quota or capacity limit (channels, ports, rate) is used up."""

    status_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Aborted(DomainError):
    """A concurrent change won; the caller may retry the whole operation."""

    status_code = grpc.StatusCode.ABORTED


class Unavailable(DomainError):
    """A dependency is down or this replica is draining; retrying elsewhere may work."""

    status_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    """The work could not finish in the time the caller allowed."""

    status_code = grpc.StatusCode.DEADLINE_EXCEEDED
