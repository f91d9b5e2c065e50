"""Huge prompts under a large server.max_prompt_chars are answered quickly: features read a
bounded tail, so a megabyte costs little more than a short prompt."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

MEGABYTE = 1_000_000
BOUND_S = 60.0
"""Deadline of one huge-prompt call: catches a hang only (it takes tens of milliseconds when
idle; a loaded machine may take far longer, and speed is not what these tests check)."""


@pytest.fixture
def big_stub(
    make_service: Callable[..., Service], connect: Callable[[Service], grpc.Channel]
) -> pb_grpc.RouterServiceStub:
    """A stub on a service that accepts prompts of up to 2 million characters."""
    return pb_grpc.RouterServiceStub(connect(make_service(max_prompt_chars=2 * MEGABYTE)))


def _words(chars: int) -> str:
    unit = "The quick brown fox jumps over the lazy dog. "
    return (unit * (chars // len(unit) + 1))[:chars]


def test_megabyte_prompt_is_answered(big_stub: pb_grpc.RouterServiceStub) -> None:
    """A 1 MB prompt (about 260k tokens) is under the size limit but fits no model's context
    window: it is answered (within a deadline that only a hang exceeds) with
    FAILED_PRECONDITION naming the window."""
    with pytest.raises(grpc.RpcError) as caught:
        big_stub.Route(pb.RouteRequest(prompt=_words(MEGABYTE)), timeout=BOUND_S)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    assert "context window" in (error.details() or "")


def test_largest_context_prompt_is_routed(big_stub: pb_grpc.RouterServiceStub) -> None:
    """A 450 KB prompt (about 117k tokens) fits only GPT-4's 128k window: it is routed there
    with probability 1 (within a deadline that only a hang exceeds)."""
    response = big_stub.Route(pb.RouteRequest(prompt=_words(450_000)), timeout=BOUND_S)
    assert response.model == "gpt-4-1106-preview"
    assert response.probability == 1.0
    assert list(response.fallback_models) == []
