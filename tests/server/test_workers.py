"""Several serving processes on one port: decisions from every worker, feedback forwarded to
the worker that decided, merged learning, a clean SIGTERM, and one log view over all files."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from fault_helpers import ServerLauncher, ServerProcess, worker_stub, workers_config

from banditroute.store.reader import open_log
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
CALL_TIMEOUT_S = 30.0
FAVOURED = "mistralai/mixtral-8x7b-chat"


def test_two_workers_share_the_port_forward_feedback_and_merge(tmp_path: Path) -> None:
    """With workers = 2 both processes make decisions; feedback sent over another connection
    reaches the owning worker (every one is LEARNED); merge rounds run; SIGTERM exits 0 and the
    per-worker log files read back together hold every decision and feedback."""
    launcher = ServerLauncher(tmp_path)
    try:
        server = launcher.start(
            workers_config(tmp_path), log_level="debug", timeout_s=START_TIMEOUT_S
        )
        _exercise(server)
    finally:
        launcher.close_all()
    _check_log(tmp_path)


def _exercise(server: ServerProcess) -> None:
    address = server.address
    try:
        owners: set[str] = set()
        learned = 0
        for index in range(60):
            route_channel, route_stub = worker_stub(address)
            decision = route_stub.Route(
                pb.RouteRequest(prompt=f"What is the capital of country number {index}?"),
                timeout=CALL_TIMEOUT_S,
            )
            owners.add(decision.decision_id[:2])
            feedback_channel, feedback_stub = worker_stub(address)
            reward = 1.0 if decision.model == FAVOURED else 0.0
            ack = feedback_stub.Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=reward),
                timeout=CALL_TIMEOUT_S,
            )
            learned += ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
            route_channel.close()
            feedback_channel.close()
        deadline = time.monotonic() + 120.0  # catches a hang only
        while "models_merged" not in server.log_text():
            assert time.monotonic() < deadline, "no merge round ran"
            time.sleep(0.2)
    finally:
        code = server.terminate(STOP_TIMEOUT_S)
    assert owners == {"00", "01"}
    assert learned == 60
    assert code == 0


def _check_log(tmp_path: Path) -> None:
    source = open_log(tmp_path / "log.duckdb")
    con = source.connection
    assert con.execute("SELECT count(*) FROM decisions").fetchone() == (60,)
    assert con.execute("SELECT count(*) FROM feedback").fetchone() == (60,)
    per_worker = con.execute(
        "SELECT count(DISTINCT substr(d.decision_id, 1, 2)) FROM decisions d "
        "JOIN feedback f USING (decision_id)"
    ).fetchone()
    assert per_worker == (2,)


FAILING = "mistralai/mistral-7b-chat"
OTHER = "gpt-3.5-turbo-1106"


def _route_from(
    address: str, worker: str, prompt: str
) -> tuple[pb.RouteResponse, grpc.Channel, pb_grpc.RouterServiceStub]:
    """A decision made by ``worker`` (its index prefixes the id): new connections until
    SO_REUSEPORT lands one there."""
    for _ in range(200):
        channel, stub = worker_stub(address)
        decision = stub.Route(
            pb.RouteRequest(prompt=prompt, candidate_models=[FAILING, OTHER]),
            timeout=CALL_TIMEOUT_S,
        )
        if decision.decision_id.startswith(worker):
            return decision, channel, stub
        channel.close()
    raise AssertionError(f"no connection reached worker {worker}")


def test_failures_one_worker_sees_open_the_breaker_in_the_other(tmp_path: Path) -> None:
    """Three ERROR outcomes of a model, all reported to worker 0, open that model's breaker in
    worker 1 as well after a merge round: worker 1 then routes around it, citing health."""
    launcher = ServerLauncher(tmp_path)
    config = workers_config(tmp_path, before="[health]\nconsecutive_failures = 3\n")
    try:
        server = launcher.start(config, log_level="debug", timeout_s=START_TIMEOUT_S)
        try:
            for index in range(3):
                decision, channel, stub = _route_from(server.address, "00", f"Question {index}?")
                stub.Feedback(
                    pb.FeedbackRequest(
                        decision_id=decision.decision_id, model=FAILING,
                        status=pb.OUTCOME_STATUS_ERROR,
                    ),
                    timeout=CALL_TIMEOUT_S,
                )  # fmt: skip
                channel.close()
            deadline = time.monotonic() + 120.0  # catches a hang only
            while True:
                decision, channel, _ = _route_from(server.address, "01", "Is it open yet?")
                channel.close()
                reasons = {e.model: e.constraint for e in decision.exclusions}
                if reasons.get(FAILING) == "health":
                    break
                assert time.monotonic() < deadline, "worker 1 never saw worker 0's failures"
                time.sleep(0.3)
            assert decision.model == OTHER
        finally:
            assert server.terminate(STOP_TIMEOUT_S) == 0
    finally:
        launcher.close_all()
