"""Authentication interceptor: API key in metadata -> the caller's tenant.

The interceptor wraps every RouterService handler: it reads ``x-api-key`` (or
``authorization: Bearer KEY``) from the call's metadata, resolves it to a
:class:`~banditroute.tenancy.Principal` and makes that principal available to the servicer
through :func:`current_principal` while the handler runs. Missing or unknown keys end the
call with UNAUTHENTICATED before the servicer sees it. Health and reflection stay open, as
probes and tools expect.

It also answers a request whose bytes are not a valid message (truncated, a wrong wire type,
invalid UTF-8 in a string field) with INVALID_ARGUMENT: left to grpc, a failed decode is an
INTERNAL "Exception deserializing request!". A handler's own thread pool (the
``experimental_thread_pool`` attribute grpc reads from a behaviour) is kept on the wrapper.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from banditroute.errors import BanditrouteError
from banditroute.server.intercept import HandlerWrapper, unary_handler
from banditroute.server.status import grpc_code
from banditroute.tenancy import AccessSettings, Principal

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "banditroute_principal", default=None
)


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the AuthInterceptor installed?")
    return principal


API_KEY_HEADERS = ("x-api-key", "authorization")
"""The metadata keys that may carry a call's API key (see :func:`api_key_from_metadata`)."""


def api_key_from_metadata(metadata: Any) -> str | None:
    """The API key a call presents, if any."""
    for key, value in metadata or ():
        if key == "x-api-key" and isinstance(value, str):
            return value
        # The scheme is case-insensitive (RFC 7235): "Bearer", "bearer", "BEARER".
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[len("Bearer ") :]
    return None


class _Undecodable:
    """Stands in for a request whose bytes did not decode; the handler rejects it."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning an :class:`_Undecodable` instead of raising DecodeError."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            return _Undecodable(str(error))

    return decode


class AuthInterceptor(HandlerWrapper):
    """Authenticates RouterService calls; see the module docstring. ``access`` is the tenants
    and keys in force, or a function returning them at each call (they change on a reload)."""

    def __init__(self, access: AccessSettings | Callable[[], AccessSettings]) -> None:
        super().__init__()
        self._access = access if callable(access) else lambda: access

    def wrap(self, method: str, handler: Any) -> Any:
        """``handler`` authenticating its caller and rejecting an undecodable request."""
        behavior = handler.unary_unary
        access = self._access

        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                principal = access().authenticate(
                    api_key_from_metadata(context.invocation_metadata())
                )
            except BanditrouteError as error:
                context.abort(grpc_code(error), error.message)
            if isinstance(request, _Undecodable):
                reason = f"request: not a valid message ({request.reason})"
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
            token = _PRINCIPAL.set(principal)
            try:
                return behavior(request, context)
            finally:
                _PRINCIPAL.reset(token)

        return unary_handler(authenticated, handler, _tolerant(handler.request_deserializer))
