"""A RouterService client for the server tests, importable by name from any test module
(``from api_client import ApiClient``): a test importing from ``conftest`` gets whichever
folder's conftest pytest loaded last, so shared helpers live in modules like this one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 30.0
"""Deadline of every RPC the tests make."""


def fails_with(call: Callable[[], Any], code: grpc.StatusCode) -> str:
    """Assert that ``call()`` fails with ``code``; return the details text."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    details = error.details()
    assert isinstance(details, str)
    return details


class ApiClient:
    """A RouterService stub that presents one API key (or none) on every call."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.stub = pb_grpc.RouterServiceStub(channel)
        self.metadata = metadata

    def call(self, rpc: str, request: Any) -> Any:
        """Call ``rpc`` with ``request`` (and the key)."""
        return getattr(self.stub, rpc)(request, metadata=self.metadata, timeout=CALL_TIMEOUT_S)

    def route(self, **fields: Any) -> pb.RouteResponse:
        """Route (``prompt`` defaults to a short question)."""
        if "messages" not in fields:
            fields.setdefault("prompt", "What is the capital of France?")
        response: pb.RouteResponse = self.call("Route", pb.RouteRequest(**fields))
        return response

    def feedback(self, **fields: Any) -> pb.FeedbackResponse:
        """Send a FeedbackRequest built from keyword arguments."""
        response: pb.FeedbackResponse = self.call("Feedback", pb.FeedbackRequest(**fields))
        return response

    def stats(self, **fields: Any) -> pb.GetStatsResponse:
        """GetStats."""
        response: pb.GetStatsResponse = self.call("GetStats", pb.GetStatsRequest(**fields))
        return response

    def reset(self, model: str) -> pb.ResetModelHealthResponse:
        """ResetModelHealth."""
        response: pb.ResetModelHealthResponse = self.call(
            "ResetModelHealth", pb.ResetModelHealthRequest(model=model)
        )
        return response

    def models(self) -> list[str]:
        """The model ids ListModels returns."""
        response: pb.ListModelsResponse = self.call("ListModels", pb.ListModelsRequest())
        return [m.model for m in response.models]

    def fails(self, rpc: str, request: Any, code: grpc.StatusCode) -> str:
        """Assert that ``rpc`` fails with ``code``; return the details text."""
        return fails_with(lambda: self.call(rpc, request), code)
