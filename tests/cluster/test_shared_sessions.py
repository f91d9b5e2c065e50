"""Sticky sessions across real replica processes sharing one real valkey-server: a session
started on one replica keeps its model on another, a failure reported on one moves it on the
others, and with Valkey down each replica keeps its own sessions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess
from replica_helpers import CALL_TIMEOUT_S, cluster_of, replica_config, wait_for
from valkey_helpers import ValkeyProcess

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

SESSIONS = 8


@pytest.fixture
def two_replicas(
    tmp_path: Path, valkey_server: ValkeyProcess
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Replicas a and b joined to the valkey-server and counting each other."""
    launcher = ServerLauncher(tmp_path)
    try:
        started = tuple(
            launcher.start(replica_config(tmp_path, name), args=("--cluster", valkey_server.url))
            for name in ("a", "b")
        )
        yield started[0], started[1]
    finally:
        launcher.close_all()


def route(to: pb_grpc.RouterServiceStub, session: str, prompt: str) -> pb.RouteResponse:
    response: pb.RouteResponse = to.Route(
        pb.RouteRequest(prompt=prompt, session_id=session), timeout=CALL_TIMEOUT_S
    )
    return response


def test_a_session_keeps_its_model_on_another_replica_and_moves_everywhere_after_a_failure(
    two_replicas: tuple[ServerProcess, ServerProcess],
) -> None:
    """Each session's first Route on replica A is drawn; its next Route on replica B gets the
    same model with sticky = true (probability 1). A failure reported on B for a session's
    model makes that session's next Route on A a fresh draw, and B then keeps A's new model."""
    a, b = two_replicas
    with grpc.insecure_channel(a.address) as to_a, grpc.insecure_channel(b.address) as to_b:
        stub_a, stub_b = pb_grpc.RouterServiceStub(to_a), pb_grpc.RouterServiceStub(to_b)
        wait_for(lambda: cluster_of(stub_a).replicas_alive == 2, "two replicas")
        for index in range(SESSIONS):
            session = f"conversation-{index}"
            first = route(stub_a, session, "Help me plan a Python script.")
            second = route(stub_b, session, "Now make it read a CSV file.")
            assert not first.sticky
            assert second.sticky, session
            assert second.model == first.model
            assert second.probability == 1.0
        stub_b.Feedback(
            pb.FeedbackRequest(decision_id=second.decision_id, status=pb.OUTCOME_STATUS_ERROR),
            timeout=CALL_TIMEOUT_S,
        )
        # Replica A draws afresh once B's heartbeat has sent the failure; B follows A's move.
        moved: list[pb.RouteResponse] = []
        wait_for(lambda: not moved.append(route(stub_a, session, "Try again.")) and
                 not moved[-1].sticky, "A to draw afresh")  # fmt: skip
        after = route(stub_b, session, "And once more.")
        assert after.sticky
        assert after.model == moved[-1].model


def test_with_valkey_down_a_replica_keeps_its_own_sessions(
    two_replicas: tuple[ServerProcess, ServerProcess], valkey_server: ValkeyProcess
) -> None:
    """valkey-server killed: the replica says it is degraded, and a session's Routes on it
    stay sticky on its local table."""
    a, _b = two_replicas
    with grpc.insecure_channel(a.address) as to_a:
        stub_a = pb_grpc.RouterServiceStub(to_a)
        valkey_server.kill()
        wait_for(lambda: cluster_of(stub_a).degraded, "A degraded")
        first = route(stub_a, "offline-chat", "Help me plan a Python script.")
        second = route(stub_a, "offline-chat", "Now make it read a CSV file.")
        assert second.sticky
        assert second.model == first.model
