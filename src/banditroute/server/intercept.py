"""The common mechanics of banditroute's gRPC interceptors: wrap each RouterService method's
unary handler once, and keep the handler's own thread pool on the wrapper."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

PROTECTED_PREFIX = "/banditroute.v1.RouterService/"
"""The methods the interceptors wrap (health and reflection are left alone)."""


class HandlerWrapper(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """An interceptor that replaces each RouterService unary handler with ``wrap(method,
    handler)``. grpc calls ``intercept_service`` on every call; the wrapper of a method's
    handler is built once and reused while the server hands out the same handler for it."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wrap(self, method: str, handler: Any) -> Any:
        """The handler to serve ``method`` with instead of ``handler``."""
        raise NotImplementedError

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
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


def unary_handler(
    behavior: Callable[[Any, grpc.ServicerContext], Any],
    original: Any,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Any:
    """A unary handler running ``behavior`` in place of ``original``'s, on ``original``'s
    thread pool (the ``experimental_thread_pool`` attribute grpc reads from a behaviour)."""
    pool = getattr(original.unary_unary, "experimental_thread_pool", None)
    if pool is not None:
        behavior.experimental_thread_pool = pool  # type: ignore[attr-defined]
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request_deserializer or original.request_deserializer,
        response_serializer=original.response_serializer,
    )
