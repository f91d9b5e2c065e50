"""A worker of a ``--workers 2`` server killed with SIGKILL is replaced: the server keeps
answering on its port, the replacement answers feedback for the decisions the dead worker
made, and a crash loop makes the server give up (exit 1) instead of restarting for ever."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess, worker_pid, worker_stub, workers_config

from banditroute.decision_ids import decision_owner
from banditroute.v1 import router_pb2 as pb

START_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0
HANG_S = 120.0
"""Bound on waits for the supervisor to notice and replace a worker: catches a hang only."""


def _decisions_of(address: str, owner: int, count: int) -> list[str]:
    """``count`` decision ids made by worker ``owner`` (new connections until one reaches it)."""
    found: list[str] = []
    for attempt in range(200):
        channel, stub = worker_stub(address)
        with channel:
            decision = stub.Route(
                pb.RouteRequest(prompt=f"Question {attempt}?"), timeout=CALL_TIMEOUT_S
            )
        if decision_owner(decision.decision_id) == owner:
            found.append(decision.decision_id)
            if len(found) == count:
                return found
    pytest.fail(f"200 connections never reached worker {owner} {count} times")


def _call(address: str, rpc: str, request: object) -> Any:
    """One call through the port on a new connection, retried while it is UNAVAILABLE (a
    connection the dying worker's socket reset, or a worker that cannot reach the owner of a
    decision yet), within HANG_S: what a client of a server that lost a worker does."""
    deadline = time.monotonic() + HANG_S
    while True:
        channel, stub = worker_stub(address)
        with channel:
            try:
                return getattr(stub, rpc)(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as error:
                if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
        assert time.monotonic() < deadline, f"{rpc} stayed UNAVAILABLE"
        time.sleep(0.2)


def _feedback(address: str, decision_id: str) -> pb.FeedbackResponse:
    response: pb.FeedbackResponse = _call(
        address, "Feedback", pb.FeedbackRequest(decision_id=decision_id, quality=1.0)
    )
    return response


def _wait_for(server: ServerProcess, text: str, count: int = 1) -> None:
    deadline = time.monotonic() + HANG_S
    while server.log_text().count(text) < count:
        assert server.process.poll() is None, server.log_text()
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{server.log_text()}"
        time.sleep(0.1)


def test_a_killed_worker_is_replaced_and_answers_its_decisions(
    tmp_path: Path, launcher: ServerLauncher
) -> None:
    """kill -9 of worker 1: Route and Feedback keep being answered on the port while it is
    replaced; the replacement (same index, same log) restores worker 1's pending decisions, so
    feedback for a decision worker 1 made before dying is LEARNED, not NOT_FOUND, and a
    repeated feedback is a duplicate; SIGTERM then stops the server with exit 0."""
    server = launcher.start(
        workers_config(tmp_path, server="worker_restarts_per_minute = 5"), timeout_s=START_TIMEOUT_S
    )
    address = server.address
    waiting, acknowledged = _decisions_of(address, owner=1, count=2)
    # A synced feedback is written after every earlier row of its worker: the decision
    # still waiting for feedback is on disk before the kill.
    assert _feedback(address, acknowledged).disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    os.kill(worker_pid(server, 1), signal.SIGKILL)

    decision = _call(address, "Route", pb.RouteRequest(prompt="Still there?"))
    assert _feedback(address, decision.decision_id).feedback_count == 1
    _wait_for(server, "worker_restarted")
    answer = _feedback(address, waiting)
    assert answer.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
    assert answer.feedback_count == 1
    repeated = _feedback(address, acknowledged)  # its first feedback is restored too
    assert repeated.disposition == pb.FEEDBACK_DISPOSITION_IGNORED_DUPLICATE
    assert repeated.feedback_count == 2
    assert len(_decisions_of(address, owner=1, count=1)) == 1  # the replacement routes too
    assert server.terminate(HANG_S) == 0, server.log_text()


def test_a_crash_loop_gives_up(tmp_path: Path, launcher: ServerLauncher) -> None:
    """With worker_restarts_per_minute = 1, a worker killed once is replaced; killed again
    within the minute, the server stops every worker and exits 1, saying why."""
    server = launcher.start(
        workers_config(tmp_path, server="worker_restarts_per_minute = 1"), timeout_s=START_TIMEOUT_S
    )
    os.kill(worker_pid(server, 0), signal.SIGKILL)
    _wait_for(server, "worker_restarted")
    os.kill(worker_pid(server, 0), signal.SIGKILL)
    assert server.process.wait(timeout=HANG_S) == 1, server.log_text()
    assert "workers_given_up" in server.log_text()
