"""Reward windows and graceful shutdown of the in-process service."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import grpc
import pytest

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

WINDOW_S = 0.3


def test_feedback_after_the_reward_window_is_not_found(
    make_service: Callable[..., Service],
    connect: Callable[[Service], grpc.Channel],
    expect_error: Callable[..., str],
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """Once a decision's reward window closes it is settled (logged as skipped) and its late
    feedback fails with NOT_FOUND naming decision_id and the window."""
    service = make_service({"reward": {"window_s": WINDOW_S}})
    stub = pb_grpc.RouterServiceStub(connect(service))
    decision = stub.Route(pb.RouteRequest(prompt="Too late?"), timeout=10)
    time.sleep(WINDOW_S + 0.1)
    request = pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0)
    details = expect_error(stub.Feedback, request, grpc.StatusCode.NOT_FOUND)
    assert details.startswith("decision_id:")
    assert f"{WINDOW_S:g}s reward window" in details
    settlements = (
        stopped_log(service).execute("SELECT decision_id, action FROM settlements").fetchall()
    )
    assert settlements == [(decision.decision_id, "skipped")]


def test_stop_drains_in_flight_calls(
    service: Service,
    stub: pb_grpc.RouterServiceStub,
    monkeypatch: pytest.MonkeyPatch,
    stopped_log: Callable[[Service], duckdb.DuckDBPyConnection],
) -> None:
    """A Route in flight when the service stops still completes and is logged; calls after
    the stop fail with UNAVAILABLE."""
    policy = service.router.policy
    distribution = policy.distribution
    entered = threading.Event()

    def slow_distribution(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        time.sleep(0.3)
        return distribution(*args, **kwargs)

    monkeypatch.setattr(policy, "distribution", slow_distribution)
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(stub.Route, pb.RouteRequest(prompt="Still there?"), timeout=10)
        assert entered.wait(timeout=10)
        log = stopped_log(service)  # stops the service while the call is in flight
        decision = in_flight.result(timeout=10)
    assert decision.model
    logged = log.execute("SELECT decision_id FROM decisions").fetchall()
    assert logged == [(decision.decision_id,)]
    with pytest.raises(grpc.RpcError) as caught:
        stub.Route(pb.RouteRequest(prompt="Anyone?"), timeout=30)
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_failing_snapshot_does_not_stop_reward_windows_closing(
    make_service: Callable[..., Service],
    connect: Callable[[Service], grpc.Channel],
    expect_error: Callable[..., str],
) -> None:
    """A snapshot that cannot be written (full disk, unwritable folder) is reported, and the
    maintenance thread goes on closing reward windows (and retries the snapshot later)."""
    service = make_service(
        {"reward": {"window_s": WINDOW_S}, "policy": {"snapshot_interval_s": 1.0}}
    )
    snapshot = service.settings.policy.snapshot_path
    assert snapshot is not None
    snapshot.with_name(snapshot.name + ".tmp").mkdir()  # the temporary file cannot be opened
    stub = pb_grpc.RouterServiceStub(connect(service))
    time.sleep(1.5)  # the first snapshot has failed
    decision = stub.Route(pb.RouteRequest(prompt="Still expiring?"), timeout=10)
    # The window closes WINDOW_S after the decision; the maintenance thread settles it on its
    # next tick. Wait for that (the bound only catches a thread that stopped).
    deadline = time.monotonic() + 120.0
    while service.router.pending_count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.router.pending_count == 0
    request = pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0)
    expect_error(stub.Feedback, request, grpc.StatusCode.NOT_FOUND)
    assert service._maintenance is not None
    assert service._maintenance.is_alive()
    snapshot.with_name(snapshot.name + ".tmp").rmdir()  # the final snapshot can be written


def test_route_does_not_wait_for_a_snapshot_being_written(
    make_service: Callable[..., Service],
    connect: Callable[[Service], grpc.Channel],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The policies are serialised under the router's lock but written (and fsynced) after it
    is released: a Route completes while a snapshot write is stuck on a slow disk."""
    from banditroute.server import app

    service = make_service({"policy": {"snapshot_interval_s": 3600.0}})
    stub = pb_grpc.RouterServiceStub(connect(service))
    stub.Route(pb.RouteRequest(prompt="warm up"), timeout=10)
    writing, release = threading.Event(), threading.Event()
    real_write = app.write_snapshot

    def slow_write(payload: bytes, path: Any) -> int:
        writing.set()
        assert release.wait(120)  # released once the Route below is answered
        return real_write(payload, path)

    monkeypatch.setattr(app, "write_snapshot", slow_write)
    snapshotting = threading.Thread(target=service.snapshot)
    snapshotting.start()
    try:
        assert writing.wait(10)
        # Released only after this Route: blocked behind the write, it would hit its deadline.
        decision = stub.Route(pb.RouteRequest(prompt="Not blocked?"), timeout=30)
        assert decision.model
    finally:
        release.set()
        snapshotting.join(10)
    snapshot = service.settings.policy.snapshot_path
    assert snapshot is not None
    assert snapshot.exists()
