"""GetStats and ResetModelHealth with two serving processes: whichever worker a connection
lands on answers for the whole server (it asks the other over its Unix socket), with the
caller's access rules, and a worker that does not answer is left out instead of hanging.

One two-worker server (the real CLI) serves the module; each test uses its own tenant or model
so the tests do not depend on each other's traffic. A channel's connection stays on one worker,
which a Route's decision id names (``decision_owner``), so ``workers[i]`` is a stub whose calls
reach worker ``i``.
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess, worker_pid

from banditroute.config import settings_from_mapping
from banditroute.decision_ids import decision_owner
from banditroute.server.app import Service, WorkerIdentity, build_service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0
CALL_TIMEOUT_S = 30.0
GPT4 = "gpt-4-1106-preview"
GPT35 = "gpt-3.5-turbo-1106"
ADMIN_KEY, ACME_KEY, BETA_KEY = "key-admin-ws", "key-acme-ws", "key-beta-ws"
ADMIN, ACME, BETA = ((("x-api-key", key),) for key in (ADMIN_KEY, ACME_KEY, BETA_KEY))
FAILURES = 3
OK, ERROR = pb.OUTCOME_STATUS_OK, pb.OUTCOME_STATUS_ERROR


@dataclass
class Cluster:
    """A running two-worker server (the supervisor process and its stderr), a stub per worker."""

    server: ServerProcess
    workers: dict[int, pb_grpc.RouterServiceStub]
    tmp: Path

    def worker_pid(self, index: int) -> int:
        """The pid of worker ``index``: the child process holding its log file open."""
        return worker_pid(self.server, index)


def _config(tmp: Path) -> str:
    return f"""
[server]
port = 0
grace_s = 2.0
workers = 2
merge_interval_s = 5.0

[log]
path = "{tmp / "log.duckdb"}"

[policy]
snapshot_path = "{tmp / "policy.snapshot"}"
kind = "fixed"
fixed_model = "{GPT4}"
min_probability = 0.0

[health]
consecutive_failures = {FAILURES}
cooldown_s = 600.0
# One tenant's failures open a breaker: these tests are about workers, not tenant fairness.
min_tenants = 1

[auth]
admin_key_sha256 = ["{hash_key(ADMIN_KEY)}"]

[[tenants]]
name = "default"

[[tenants]]
name = "acme"
api_key_sha256 = ["{hash_key(ACME_KEY)}"]
budget = {{ period = "day", target_usd_per_request = 0.001 }}

[[tenants]]
name = "beta"
api_key_sha256 = ["{hash_key(BETA_KEY)}"]
models = ["{GPT4}", "{GPT35}"]
budget = {{ period = "day", limit_usd = 100.0 }}
"""


def _pin(address: str, channels: list[grpc.Channel]) -> dict[int, pb_grpc.RouterServiceStub]:
    """A stub on each worker: open private connections until a Route has reached both."""
    workers: dict[int, pb_grpc.RouterServiceStub] = {}
    for _ in range(40):
        channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = pb_grpc.RouterServiceStub(channel)
        decision = stub.Route(pb.RouteRequest(prompt="which worker?"), timeout=CALL_TIMEOUT_S)
        owner = decision_owner(decision.decision_id)
        assert owner in (0, 1)
        if owner in workers:
            channel.close()
            continue
        workers[owner] = stub
        channels.append(channel)
        if len(workers) == 2:
            return workers
    pytest.fail("40 connections all reached one worker")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A two-worker server started with ``banditroute serve``; SIGTERM at teardown."""
    tmp = tmp_path_factory.mktemp("workers_stats")
    config = tmp / "workers.toml"
    config.write_text(_config(tmp))
    channels: list[grpc.Channel] = []
    launcher = ServerLauncher(tmp)
    try:
        server = launcher.start(config, timeout_s=START_TIMEOUT_S)
        yield Cluster(server, _pin(server.address, channels), tmp)
        for channel in channels:
            channel.close()
        channels.clear()
        assert server.terminate(STOP_TIMEOUT_S) == 0
    finally:
        for channel in channels:
            channel.close()
        launcher.close_all()


def _stats(stub: pb_grpc.RouterServiceStub, key: Any, **fields: Any) -> tuple[Any, str]:
    """GetStats and the number of workers that answered (``x-banditroute-workers``)."""
    response, call = stub.GetStats.with_call(
        pb.GetStatsRequest(**fields), metadata=key, timeout=CALL_TIMEOUT_S
    )
    answered = dict(call.trailing_metadata()).get("x-banditroute-workers", "")
    return response, answered


def _row(rows: Any, **key: str) -> Any:
    found = [r for r in rows if all(getattr(r, k) == v for k, v in key.items())]
    assert len(found) == 1, f"{len(found)} rows match {key}"
    return found[0]


def test_get_stats_through_either_worker_reports_both(cluster: Cluster) -> None:
    """acme routes on both workers and sends each feedback over the other worker's connection
    (forwarded to the owner). GetStats through worker 0 and through worker 1 report the same
    combined calls, feedback, spend, pooled mean quality and error rate, and acme's budget with
    the combined spend and mean cost; both workers answered (2/2)."""
    sent: list[tuple[int, float, float, int]] = []  # (worker, quality, cost, status)
    plan = {0: [(0.9, 0.004, OK), (0.7, 0.002, OK)], 1: [(0.2, 0.001, ERROR)]}
    for worker, outcomes in plan.items():
        for quality, cost, status in outcomes:
            decision = cluster.workers[worker].Route(
                pb.RouteRequest(prompt="Summarise this."), metadata=ACME, timeout=CALL_TIMEOUT_S
            )
            assert decision_owner(decision.decision_id) == worker
            ack = cluster.workers[1 - worker].Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=quality,
                                   cost_usd=cost, latency_ms=100.0, status=status),
                metadata=ACME, timeout=CALL_TIMEOUT_S,
            )  # fmt: skip
            assert ack.disposition == pb.FEEDBACK_DISPOSITION_LEARNED
            sent.append((worker, quality, cost, status))
    spend = sum(s[2] for s in sent)
    seen = []
    for via in (0, 1):
        stats, answered = _stats(cluster.workers[via], ADMIN, tenant="acme")
        assert answered == "2/2"
        row = _row(stats.usage, model=GPT4, tenant="acme")
        assert (row.calls, row.feedback_count) == (3, 3)
        assert row.spend_usd == pytest.approx(spend)
        assert row.mean_quality == pytest.approx(statistics.fmean(s[1] for s in sent))
        assert row.error_rate == pytest.approx(1 / 3)
        assert row.latency_p50_ms == pytest.approx(100.0)
        total = _row(stats.usage, model="", tenant="")
        assert (total.calls, total.feedback_count) == (3, 3)
        budget = _row(stats.budgets, tenant="acme")
        assert budget.spend_usd == pytest.approx(spend)
        assert budget.mean_cost_usd == pytest.approx(spend / 3)
        assert budget.target_usd_per_request == pytest.approx(0.001)
        assert [b.tenant for b in stats.budgets] == ["acme"]
        seen.append(stats)
    assert seen[0].usage == seen[1].usage
    assert seen[0].budgets == seen[1].budgets
    # The peer marker means "answer for yourself" only on the private socket, not over TCP.
    _, answered = _stats(cluster.workers[0], (*ADMIN, ("x-banditroute-peer", "1")))
    assert answered == "2/2"


def test_tenant_key_sees_only_its_tenant_on_every_worker(cluster: Cluster) -> None:
    """beta routes on both workers; beta's key through either worker sees beta's combined
    figures only (no other tenant's usage or budget, health of its allowed models only), and
    asking for another tenant is still PERMISSION_DENIED, however the call is spread."""
    for worker in (0, 1):
        for _ in range(2):
            decision = cluster.workers[worker].Route(
                pb.RouteRequest(prompt="Translate this."), metadata=BETA, timeout=CALL_TIMEOUT_S
            )
            cluster.workers[worker].Feedback(
                pb.FeedbackRequest(decision_id=decision.decision_id, quality=0.5, cost_usd=0.01),
                metadata=BETA, timeout=CALL_TIMEOUT_S,
            )  # fmt: skip
    for via in (0, 1):
        stats, answered = _stats(cluster.workers[via], BETA)
        assert answered == "2/2"
        assert {r.tenant for r in stats.usage} <= {"beta", ""}
        assert _row(stats.usage, model="", tenant="").calls == 4
        assert _row(stats.usage, model=GPT4, tenant="beta").spend_usd == pytest.approx(0.04)
        assert [b.tenant for b in stats.budgets] == ["beta"]
        assert stats.budgets[0].spend_usd == pytest.approx(0.04)
        assert stats.budgets[0].limit_usd == pytest.approx(100.0)
        assert {h.model for h in stats.health} <= {GPT4, GPT35}
        with pytest.raises(grpc.RpcError) as denied:
            cluster.workers[via].GetStats(
                pb.GetStatsRequest(tenant="acme"), metadata=BETA, timeout=CALL_TIMEOUT_S
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _breaker(stub: pb_grpc.RouterServiceStub, model: str) -> str:
    stats, answered = _stats(stub, ADMIN)
    assert answered == "2/2"
    state: str = _row(stats.health, model=model).state
    return state


def test_reset_model_health_through_one_worker_closes_the_breaker_on_both(
    cluster: Cluster,
) -> None:
    """GPT-3.5 fails on worker 1 only: its breaker opens there, and GetStats through worker 0
    says so (the worst state). ResetModelHealth through worker 0 closes it on worker 1 too:
    the reply and GetStats say closed, and worker 1 routes to GPT-3.5 again."""
    one = cluster.workers[1]
    for _ in range(FAILURES):
        decision = one.Route(
            pb.RouteRequest(prompt="hi", candidate_models=[GPT35]), timeout=CALL_TIMEOUT_S
        )
        one.Feedback(
            pb.FeedbackRequest(decision_id=decision.decision_id, status=ERROR),
            timeout=CALL_TIMEOUT_S,
        )
    with pytest.raises(grpc.RpcError) as refused:
        one.Route(pb.RouteRequest(prompt="hi", candidate_models=[GPT35]), timeout=CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _breaker(cluster.workers[0], GPT35) == "open"

    reply, call = cluster.workers[0].ResetModelHealth.with_call(
        pb.ResetModelHealthRequest(model=GPT35), metadata=ADMIN, timeout=CALL_TIMEOUT_S
    )
    assert dict(call.trailing_metadata())["x-banditroute-workers"] == "2/2"
    assert reply.health.state == "closed"
    assert _breaker(cluster.workers[0], GPT35) == "closed"
    assert _breaker(cluster.workers[1], GPT35) == "closed"
    routed = one.Route(
        pb.RouteRequest(prompt="hi", candidate_models=[GPT35]), timeout=CALL_TIMEOUT_S
    )
    assert routed.model == GPT35


def test_a_stopped_worker_is_left_out_instead_of_hanging(cluster: Cluster) -> None:
    """With worker 1 stopped (SIGSTOP: its socket accepts, nothing answers), GetStats and
    ResetModelHealth through worker 0 come back (within their deadline, which a call waiting on
    worker 1 would exceed) with worker 0's figures (1/2) and a warning logged; once worker 1
    continues, both answer again."""
    before, _ = _stats(cluster.workers[0], ADMIN)
    pid = cluster.worker_pid(1)
    os.kill(pid, signal.SIGSTOP)
    try:
        stats, answered = _stats(cluster.workers[0], ADMIN)
        assert answered == "1/2"
        whole = _row(before.usage, model="", tenant="").calls
        assert 0 < _row(stats.usage, model="", tenant="").calls < whole
        _, call = cluster.workers[0].ResetModelHealth.with_call(
            pb.ResetModelHealthRequest(model=GPT4), metadata=ADMIN, timeout=CALL_TIMEOUT_S
        )
        assert dict(call.trailing_metadata())["x-banditroute-workers"] == "1/2"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert "peer_unanswered" in cluster.server.log_text()
    deadline = time.monotonic() + 120.0  # the connection to worker 1 may need a retry first
    while (answer := _stats(cluster.workers[0], ADMIN))[1] != "2/2":
        assert time.monotonic() < deadline, "worker 1 did not answer again"
        time.sleep(0.2)
    assert _row(answer[0].usage, model="", tenant="").calls == whole


def _lone_worker(tmp_path: Path) -> Service:
    """Worker 0 of a server of two whose worker 1 never started, serving on a free port."""
    settings = settings_from_mapping(
        {
            "server": {"port": 0, "host": "127.0.0.1"},
            "log": {"path": str(tmp_path / "log.duckdb")},
            "policy": {"snapshot_path": str(tmp_path / "policy.snapshot")},
        }
    )
    service = build_service(settings, WorkerIdentity(0, 2, tmp_path))
    service.start()
    return service


def test_a_worker_that_is_gone_is_left_out(tmp_path: Path) -> None:
    """A worker whose peer's socket does not exist (it never started, or exited) answers
    GetStats with its own figures (1/2), within the call's deadline."""
    service = _lone_worker(tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        stub = pb_grpc.RouterServiceStub(channel)
        stub.Route(pb.RouteRequest(prompt="hello"), timeout=CALL_TIMEOUT_S)
        stats, answered = _stats(stub, ())
        assert answered == "1/2"
        assert _row(stats.usage, model="", tenant="").calls == 1
    finally:
        channel.close()
        service.stop()


def test_feedback_naming_no_worker_is_not_found(tmp_path: Path) -> None:
    """A decision id whose first two characters read as a worker index this server does not
    have (``ff``, ``-1``) names no decision: NOT_FOUND on decision_id, not an UNAVAILABLE
    (which clients retry) from forwarding it to a socket that cannot exist."""
    service = _lone_worker(tmp_path)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        stub = pb_grpc.RouterServiceStub(channel)
        for decision_id in ("ff" + "0" * 30, "-1" + "0" * 30):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Feedback(
                    pb.FeedbackRequest(decision_id=decision_id, quality=1.0),
                    timeout=CALL_TIMEOUT_S,
                )
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND, caught.value.details()
            assert caught.value.details().startswith("decision_id")
    finally:
        channel.close()
        service.stop()
