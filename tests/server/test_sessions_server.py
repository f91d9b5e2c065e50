"""Sessions over gRPC (issue 15): ``session_id`` on RouteRequest, ``sticky`` on the answer,
the id's size bounded, and with ``--workers`` every Route of a session decided by one worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
from api_client import CALL_TIMEOUT_S
from fault_helpers import ServerLauncher, worker_stub, workers_config

from banditroute.server.app import Service
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

WORKERS_START_TIMEOUT_S = 120.0
"""Longest wait for a two-worker server to listen (a loaded machine starts them slowly)."""


def test_session_id_keeps_the_model_over_grpc(
    route: Callable[..., pb.RouteResponse], feedback: Callable[..., pb.FeedbackResponse]
) -> None:
    """The second Route of a session answers the first one's model with sticky = true and
    probability 1; after a failure reported for it the next one is drawn again."""
    first = route(session_id="chat-42")
    second = route(session_id="chat-42", prompt="And what about Spain?")
    assert not first.sticky
    assert second.sticky
    assert second.model == first.model
    assert second.probability == 1.0
    assert not second.explored
    feedback(decision_id=second.decision_id, status=pb.OUTCOME_STATUS_ERROR)
    assert not route(session_id="chat-42").sticky


def test_an_oversized_session_id_is_refused_naming_the_field(
    stub: pb_grpc.RouterServiceStub, expect_error: Callable[..., str]
) -> None:
    """A session_id over server.max_request_id_chars is INVALID_ARGUMENT naming session_id,
    saying its size and not echoing it."""
    secret = "s" * 300
    details = expect_error(
        stub.Route, pb.RouteRequest(prompt="hi", session_id=secret),
        grpc.StatusCode.INVALID_ARGUMENT,
    )  # fmt: skip
    assert details.startswith("session_id: 300 characters")
    assert secret not in details


def test_workers_decide_a_sessions_routes_in_one_worker(
    launcher: ServerLauncher, tmp_path: Path
) -> None:
    """With two workers, Routes of one session arriving on different connections (either
    worker) are all decided by the session's worker and stay on one model; a failure
    reported on yet another connection (forwarded to the decision's worker) moves it."""
    server = launcher.start(workers_config(tmp_path), timeout_s=WORKERS_START_TIMEOUT_S)
    decisions = []
    for turn in range(10):
        channel, stub = worker_stub(server.address)
        try:
            decisions.append(stub.Route(
                pb.RouteRequest(prompt=f"Turn {turn}: tell me more.", session_id="conv-7"),
                timeout=CALL_TIMEOUT_S,
            ))  # fmt: skip
        finally:
            channel.close()
    assert len({d.model for d in decisions}) == 1
    assert [d.sticky for d in decisions] == [False] + [True] * 9
    assert len({d.decision_id[:2] for d in decisions}) == 1  # one owner decided them all
    channel, stub = worker_stub(server.address)
    try:
        stub.Feedback(pb.FeedbackRequest(decision_id=decisions[-1].decision_id,
                                         status=pb.OUTCOME_STATUS_ERROR),
                      timeout=CALL_TIMEOUT_S)  # fmt: skip
        after = stub.Route(pb.RouteRequest(prompt="Next turn.", session_id="conv-7"),
                           timeout=CALL_TIMEOUT_S)  # fmt: skip
    finally:
        channel.close()
    assert not after.sticky


def test_a_sessions_routes_stay_in_one_experiment_arm(
    make_service: Callable[..., Service], connect: Callable[[Service], grpc.Channel]
) -> None:
    """With an A/B experiment and no key tag on the request, every Route of one session gets
    the arm of its first (a sticky decision of arm "b" would otherwise report, and teach "b",
    the model arm "default" chose); different sessions still fall in both arms."""
    arms = [{"policy": "default", "weight": 0.5}, {"policy": "b", "weight": 0.5}]
    service = make_service({
        "policies": {"b": {"kind": "uniform"}},
        "tenants": [{"name": "default", "experiment": {"key_tag": "user", "arms": arms}}],
    })  # fmt: skip
    stub = pb_grpc.RouterServiceStub(connect(service))
    seen: set[str] = set()
    for session in (f"conv-{i}" for i in range(16)):
        requests = [
            pb.RouteRequest(prompt=f"Turn {t}: go on.", session_id=session) for t in range(6)
        ]
        answers = [stub.Route(request, timeout=CALL_TIMEOUT_S) for request in requests]
        assert len({a.experiment_arm for a in answers}) == 1, session
        assert len({a.model for a in answers}) == 1, session
        seen.add(answers[0].experiment_arm)
    assert seen == {"default", "b"}
