"""Domain errors of banditroute, each carrying the status it maps to on the wire.

The core never imports grpc: an error names its status as a :class:`StatusName` string, and
the server maps that name to a ``grpc.StatusCode`` in exactly one place
(``banditroute.server.status``). Hierarchy::

    BanditrouteError
    ├── InvalidArgument      (INVALID_ARGUMENT)  a request field is malformed; ``field`` names it
    ├── NotFound             (NOT_FOUND)         unknown or expired decision, unknown model
    ├── AlreadyExists        (ALREADY_EXISTS)    a request_id reused for a different request
    ├── FailedPrecondition   (FAILED_PRECONDITION) no model satisfies the request
    ├── Unauthenticated      (UNAUTHENTICATED)   missing or unknown API key
    ├── PermissionDenied     (PERMISSION_DENIED) outside the tenant's allow-list
    ├── ResourceExhausted    (RESOURCE_EXHAUSTED) a hard budget or rate limit is reached
    ├── Unavailable          (UNAVAILABLE)       the service is shutting down or overloaded
    └── ConfigError          (INVALID_ARGUMENT)  a configuration file or CLI argument is wrong
"""

from __future__ import annotations

from enum import StrEnum


class StatusName(StrEnum):
    """Names of the gRPC status codes the domain uses (a transport-free mirror)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class BanditrouteError(Exception):
    """Base of every error banditroute raises on purpose; ``status`` says how to report it."""

    status: StatusName = StatusName.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(BanditrouteError):
    """A request field is malformed; ``field`` names it and the message says why."""

    status = StatusName.INVALID_ARGUMENT


class NotFound(BanditrouteError):
    """The thing asked for does not exist (or no longer exists)."""

    status = StatusName.NOT_FOUND


class AlreadyExists(BanditrouteError):
    """What the request names is taken by something else (a request_id by another request)."""

    status = StatusName.ALREADY_EXISTS


class FailedPrecondition(BanditrouteError):
    """The request is valid but cannot be served in the current state (no eligible model)."""

    status = StatusName.FAILED_PRECONDITION


class Unauthenticated(BanditrouteError):
    """The caller did not present a valid API key."""

    status = StatusName.UNAUTHENTICATED


class PermissionDenied(BanditrouteError):
    """The caller is known but not allowed to do this."""

    status = StatusName.PERMISSION_DENIED


class ResourceExhausted(BanditrouteError):
    """A hard limit (budget cap, rate limit, queue) is reached."""

    status = StatusName.RESOURCE_EXHAUSTED


class Unavailable(BanditrouteError):
    """The service cannot take the request now (shutting down, log writer failed)."""

    status = StatusName.UNAVAILABLE


class ConfigError(BanditrouteError):
    """A configuration file, profile or command-line argument is invalid."""

    status = StatusName.INVALID_ARGUMENT
