"""Several serving processes on one port: decisions from every worker, feedback forwarded to
the worker that decided, merged learning, a clean SIGTERM, and one log view over all files."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
from fault_helpers import ServerLauncher, ServerProcess

from banditroute.store.reader import open_log
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
CALL_TIMEOUT_S = 15.0
FAVOURED = "mistralai/mixtral-8x7b-chat"


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "workers.toml"
    config.write_text(
        f"""
[server]
port = 0
grace_s = 2.0
workers = 2
merge_interval_s = 1.0

[log]
path = "{tmp_path / "log.duckdb"}"

[policy]
snapshot_path = "{tmp_path / "policy.snapshot"}"
"""
    )
    return config


def _stub(address: str) -> tuple[grpc.Channel, pb_grpc.RouterServiceStub]:
    # A private subchannel pool gives every channel its own connection, so SO_REUSEPORT
    # spreads the channels over the workers.
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, pb_grpc.RouterServiceStub(channel)


def test_two_workers_share_the_port_forward_feedback_and_merge(tmp_path: Path) -> None:
    """With workers = 2 both processes make decisions; feedback sent over another connection
    reaches the owning worker (every one is LEARNED); merge rounds run; SIGTERM exits 0 and the
    per-worker log files read back together hold every decision and feedback."""
    launcher = ServerLauncher(tmp_path)
    try:
        server = launcher.start(_config(tmp_path), log_level="debug", timeout_s=START_TIMEOUT_S)
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
            route_channel, route_stub = _stub(address)
            decision = route_stub.Route(
                pb.RouteRequest(prompt=f"What is the capital of country number {index}?"),
                timeout=CALL_TIMEOUT_S,
            )
            owners.add(decision.decision_id[:2])
            feedback_channel, feedback_stub = _stub(address)
            reward = 1.0 if decision.model == FAVOURED else 0.0
            ack = feedback_stub.Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=reward),
                timeout=CALL_TIMEOUT_S,
            )
            learned += ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
            route_channel.close()
            feedback_channel.close()
        deadline = time.monotonic() + 20.0
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
