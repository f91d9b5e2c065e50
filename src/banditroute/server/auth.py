"""Authentication interceptor: API key in metadata -> the caller's tenant.

The interceptor wraps every RouterService handler: it reads ``x-api-key`` (or
``authorization: Bearer KEY``) from the call's metadata, resolves it to a
:class:`~banditroute.tenancy.Principal` and makes that principal available to the servicer
through :func:`current_principal` while the handler runs. Missing or unknown keys end the
call with UNAUTHENTICATED before the servicer sees it. Health and reflection stay open, as
probes and tools expect.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc

from banditroute.errors import BanditrouteError
from banditroute.server.status import grpc_code
from banditroute.tenancy import AccessSettings, Principal

_PRINCIPAL: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "banditroute_principal", default=None
)
PROTECTED_PREFIX = "/banditroute.v1.RouterService/"


def current_principal() -> Principal:
    """The authenticated caller of the RPC being served."""
    principal = _PRINCIPAL.get()
    if principal is None:
        raise RuntimeError("no authenticated principal: is the AuthInterceptor installed?")
    return principal


def api_key_from_metadata(metadata: Any) -> str | None:
    """The API key a call presents, if any."""
    for key, value in metadata or ():
        if key == "x-api-key" and isinstance(value, str):
            return value
        # The scheme is case-insensitive (RFC 7235): "Bearer", "bearer", "BEARER".
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[len("Bearer ") :]
    return None


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates RouterService calls; see the module docstring."""

    def __init__(self, access: AccessSettings) -> None:
        self._access = access

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        method = getattr(handler_call_details, "method", "")
        if handler is None or not method.startswith(PROTECTED_PREFIX):
            return handler
        if handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        access = self._access

        def authenticated(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                principal = access.authenticate(
                    api_key_from_metadata(context.invocation_metadata())
                )
            except BanditrouteError as error:
                context.abort(grpc_code(error), error.message)
            token = _PRINCIPAL.set(principal)
            try:
                return behavior(request, context)
            finally:
                _PRINCIPAL.reset(token)

        return grpc.unary_unary_rpc_method_handler(
            authenticated,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
