"""PromotePolicy and RollbackPolicy on a server of two workers (the real CLI): the gate reads
both workers' logs, a promotion through one worker makes both serve the promoted policy (a
worker restarted afterwards too) with one audit record, a rollback through either puts both
back, and a worker that does not answer fails the promotion with nothing changed."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess, worker_pid

from banditroute.decision_ids import decision_owner
from banditroute.store.reader import export_selects
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
CALL_TIMEOUT_S = 120.0
HANG_S = 120.0
"""Bound of every wait below: catches a hang only."""
ADMIN_KEY, ACME_KEY = "key-admin-wp", "key-acme-wp"
ADMIN, ACME = ((("x-api-key", key),) for key in (ADMIN_KEY, ACME_KEY))
QUALITY = {"alpha": 1.0, "beta": 0.1, "gamma": 0.1}
DECISIONS = 240  # fixed:alpha under uniform logging of 3 models: ESS about 80
PROMOTED = "fixed:alpha"


def _config(tmp: Path) -> str:
    models = "\n".join(
        f"""[[models]]
id = "{name}"
provider = "p{i}"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.1
data_classes = ["public", "internal", "pii"]
"""
        for i, name in enumerate(QUALITY)
    )
    return f"""{models}
[server]
port = 0
grace_s = 2.0
workers = 2
merge_interval_s = 1.0

[log]
path = "{tmp / "log.duckdb"}"
export_interval_s = 0.5

[policy]
kind = "uniform"

[auth]
admin_key_sha256 = ["{hash_key(ADMIN_KEY)}"]

[[tenants]]
name = "acme"
api_key_sha256 = ["{hash_key(ACME_KEY)}"]
"""


@dataclass
class Server:
    """A running two-worker server and a stub pinned on each worker."""

    process: ServerProcess
    tmp: Path
    channels: list[grpc.Channel]

    def stub(self, index: int) -> pb_grpc.RouterServiceStub:
        """A fresh connection that reached worker ``index`` (SO_REUSEPORT picks the worker)."""
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            channel = grpc.insecure_channel(
                self.process.address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            stub = pb_grpc.RouterServiceStub(channel)
            decision = stub.Route(pb.RouteRequest(prompt="which worker?"), metadata=ACME,
                                  timeout=CALL_TIMEOUT_S)  # fmt: skip
            if decision_owner(decision.decision_id) == index:
                self.channels.append(channel)
                return stub
            channel.close()
        raise AssertionError(f"no connection reached worker {index}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A two-worker uniform-logging server with DECISIONS decisions fed back through both
    workers (alpha clearly best), every one in the exports the other worker reads."""
    config = tmp_path / "workers.toml"
    config.write_text(_config(tmp_path))
    launcher = ServerLauncher(tmp_path)
    running = None
    try:
        running = Server(launcher.start(config, timeout_s=START_TIMEOUT_S), tmp_path, [])
        stubs = [running.stub(0), running.stub(1)]
        for i in range(DECISIONS):
            stub = stubs[i % 2]
            decision = stub.Route(pb.RouteRequest(prompt=f"Question {i}: what is {i} plus {i}?"),
                                  metadata=ACME, timeout=CALL_TIMEOUT_S)  # fmt: skip
            stub.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id,
                                             quality=QUALITY[decision.model], cost_usd=0.0001),
                          metadata=ACME, timeout=CALL_TIMEOUT_S)  # fmt: skip
        _await_exports(tmp_path / "log.duckdb", DECISIONS)
        yield running
    finally:
        if running is not None:
            for channel in running.channels:
                channel.close()
        launcher.close_all()


def _await_exports(path: Path, fed: int) -> None:
    """Wait until both workers' Parquet exports (what the other worker's gate reads) hold
    ``fed`` decisions with feedback (the routes that pinned the stubs add a few more)."""
    deadline = time.monotonic() + HANG_S
    while True:
        count = 0
        for index in (0, 1):
            selects = export_selects(path.with_name(f"{path.stem}.w{index}.duckdb.export"))
            if "feedback" in selects:
                query = f"SELECT count(DISTINCT decision_id) FROM ({selects['feedback']})"
                with duckdb.connect() as con:  # not the module's shared default connection
                    row = con.execute(query).fetchone()
                count += 0 if row is None else int(row[0])
        if count >= fed:
            return
        assert time.monotonic() < deadline, f"exports hold {count} of {fed} decisions"
        time.sleep(0.2)


def _version(stub: pb_grpc.RouterServiceStub) -> str:
    decision = stub.Route(pb.RouteRequest(prompt="Which policy?"), metadata=ACME,
                          timeout=CALL_TIMEOUT_S)  # fmt: skip
    version: str = decision.policy_version
    return version


def _unlearned(version: str) -> str:
    """A policy version without its update count (``uniform:SETTINGS``)."""
    return version.rsplit(":", 1)[0]


def _promote(stub: pb_grpc.RouterServiceStub, timeout: float = CALL_TIMEOUT_S) -> Any:
    return stub.PromotePolicy(pb.PromotePolicyRequest(candidate=PROMOTED, margin=0.05),
                              metadata=ADMIN, timeout=timeout)  # fmt: skip


def _audit_records(tmp: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """The promotion and rollback records of both workers' audit chains (server stopped)."""
    records = []
    for index in (0, 1):
        with duckdb.connect(str(tmp / f"log.w{index}.duckdb"), read_only=True) as con:
            rows = con.execute(
                "SELECT kind, policy_version, CAST(payload AS VARCHAR) FROM audit "
                "WHERE kind IN ('promotion', 'rollback') ORDER BY seq"
            ).fetchall()
        records += [(kind, version, json.loads(payload)) for kind, version, payload in rows]
    return records


def _await_log(process: ServerProcess, text: str) -> None:
    deadline = time.monotonic() + HANG_S
    while text not in process.log_text():
        assert time.monotonic() < deadline, f"no {text!r} in the server's log"
        time.sleep(0.2)


def test_a_promotion_through_one_worker_reaches_both_and_a_rollback_puts_both_back(
    server: Server,
) -> None:
    """PromotePolicy through worker 0 gates fixed:alpha on both workers' logs (every fed
    decision counts) and clears; Routes on both workers then carry the promoted version, and
    so do those of worker 1 after it is killed and the supervisor restarts it. RollbackPolicy
    through worker 1 puts both back (a second has nothing to undo). The audit logs hold one
    promotion record and one rollback record, not one per worker."""
    first, second = server.stub(0), server.stub(1)
    before = _version(first)
    assert _version(second) == before

    response = _promote(first)
    assert response.promoted, response.reason
    assert response.decisions >= DECISIONS  # both workers' decisions, not worker 0's half
    assert response.policy_version == PROMOTED
    assert _version(first) == _version(second) == PROMOTED

    os.kill(worker_pid(server.process, 1), signal.SIGKILL)
    _await_log(server.process, "worker_restarted")
    assert _version(server.stub(1)) == PROMOTED

    rolled = server.stub(1).RollbackPolicy(pb.RollbackPolicyRequest(), metadata=ADMIN,
                                           timeout=CALL_TIMEOUT_S)  # fmt: skip
    # The configured policy again (worker 1's restarted without the updates it had learned:
    # this server keeps no snapshot, so only the count in its version differs).
    assert (_unlearned(rolled.policy_version), rolled.rolled_back_version) == (
        _unlearned(before), PROMOTED,
    )  # fmt: skip
    assert _version(first) == before
    assert _unlearned(_version(server.stub(1))) == _unlearned(before)
    with pytest.raises(grpc.RpcError) as again:
        first.RollbackPolicy(pb.RollbackPolicyRequest(), metadata=ADMIN, timeout=CALL_TIMEOUT_S)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    assert server.process.terminate(STOP_TIMEOUT_S) == 0
    records = _audit_records(server.tmp)
    assert sorted((kind, _unlearned(version)) for kind, version, _ in records) == [
        ("promotion", "fixed"), ("rollback", _unlearned(before)),
    ]  # fmt: skip


def test_a_worker_that_does_not_answer_fails_the_promotion_and_nothing_changes(
    server: Server,
) -> None:
    """With worker 1 stopped (SIGSTOP), PromotePolicy through worker 0 fails UNAVAILABLE within
    the caller's deadline, saying nothing changed; once worker 1 continues, both workers still
    serve the policy they served before (a late request finds no promotion to adopt)."""
    first, second = server.stub(0), server.stub(1)
    before = _version(first)
    pid = worker_pid(server.process, 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(grpc.RpcError) as failed:
            _promote(first, timeout=40.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE, failed.value.details()
    assert "nothing changed" in (failed.value.details() or "")
    assert _version(first) == before
    assert _version(second) == before
    assert _version(server.stub(1)) == before
