"""The one place domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from banditroute.errors import BanditrouteError, StatusName

_CODES: dict[StatusName, grpc.StatusCode] = {
    StatusName.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    StatusName.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    StatusName.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    StatusName.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    StatusName.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    StatusName.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    StatusName.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StatusName.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    StatusName.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_code(error: BanditrouteError) -> grpc.StatusCode:
    """The gRPC status code an error carries."""
    return _CODES[error.status]
