"""Every string and list a client sends is bounded by a ``[server]`` limit: past it the call
fails with INVALID_ARGUMENT naming the field, saying how large it was and never echoing what it
held, before anything is decided or logged (issue 12, item 1: one oversized tag used to cost
other clients' acknowledged feedback)."""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import grpc
import pytest

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
LONG = "z" * 257
"""One character over the default max_name_chars and max_request_id_chars (256)."""


def test_values_at_their_limits_are_routed(route: Callable[..., pb.RouteResponse]) -> None:
    """Tags, request_id and lists exactly at their limits are accepted."""
    tags = {f"{i:03d}".ljust(128, "k"): "v" * 1024 for i in range(64)}
    decision = route(tags=tags, request_id="r" * 256, excluded_models=["claude-v1"] * 1000)
    assert decision.model not in ("", "claude-v1")


def test_feedback_and_stats_names_are_bounded(
    stub: pb_grpc.RouterServiceStub,
    expect_error: Callable[..., str],
    route: Callable[..., pb.RouteResponse],
) -> None:
    """Feedback's decision_id and model and GetStats' tenant past max_name_chars are refused
    naming the field, without quoting it; the decision still takes a valid feedback."""
    decision = route()
    too_long_id = pb.FeedbackRequest(decision_id=LONG, quality=1.0)
    assert expect_error(stub.Feedback, too_long_id, INVALID).startswith("decision_id: 257 ")
    long_model = pb.FeedbackRequest(decision_id=decision.decision_id, model=LONG)
    assert expect_error(stub.Feedback, long_model, INVALID).startswith("model: 257 ")
    stats = pb.GetStatsRequest(tenant=LONG)
    assert expect_error(stub.GetStats, stats, INVALID).startswith("tenant: 257 ")
    ok = stub.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0))
    assert ok.disposition == pb.FEEDBACK_DISPOSITION_LEARNED


def test_the_oversized_tag_of_issue_12_is_refused_and_never_logged(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    expect_error: Callable[..., str],
    route: Callable[..., pb.RouteResponse],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """The issue's request, a 16-million-character tag value, fails with INVALID_ARGUMENT
    naming ``tags`` (its content not echoed); nothing of it reaches the log, and the other
    client's decision and feedback are all there after the stop."""
    other = route(prompt="What is the capital of France?")
    stub.Feedback(pb.FeedbackRequest(decision_id=other.decision_id, quality=1.0), timeout=10)
    huge = pb.RouteRequest(prompt="hello there", tags={"note": "\x01" * 16_000_000})
    details = expect_error(stub.Route, huge, INVALID)
    assert details.startswith("tags: a value of 16000000 characters"), details
    assert "\x01" not in details
    log = stopped_log(service)
    assert log.execute("SELECT decision_id FROM decisions").fetchall() == [(other.decision_id,)]
    assert log.execute("SELECT decision_id FROM feedback").fetchall() == [(other.decision_id,)]
    assert not service.event_log.rejected_dir.exists()


def test_oversized_headers_are_refused_and_the_server_keeps_serving(
    make_service: Callable[..., Service], connect: Callable[[Service], grpc.Channel]
) -> None:
    """A call whose metadata exceeds server.max_metadata_bytes fails (gRPC refuses it) and
    the next call is answered."""
    service = make_service(max_metadata_bytes=4096)
    stub = pb_grpc.RouterServiceStub(connect(service))
    request = pb.RouteRequest(prompt="What is 2 + 2?")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Route(request, metadata=[("x-note", "m" * 8192)], timeout=10)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() != grpc.StatusCode.OK
    assert stub.Route(request, timeout=10).model
