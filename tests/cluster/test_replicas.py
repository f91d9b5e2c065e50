"""Real replica processes (``banditroute serve --cluster URL``) on 127.0.0.1 sharing one real
valkey-server: a tenant's hard cap and a model's rate limit hold across replicas, a breaker
opened on one keeps the model out on another, and killing valkey-server under load leaves
Routes answered, shows the replicas degraded, and loses or double-counts no spend."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fault_helpers import ServerLauncher, ServerProcess
from replica_helpers import (
    CALL_TIMEOUT_S,
    LIMITED,
    LIMITED_RPM,
    acme,
    cluster_of,
    replica_config,
    stub,
    wait_for,
)
from valkey_helpers import ValkeyProcess

from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

COST = 0.3


class Replicas:
    """Starts replicas (``r0``, ``r1``...) joined to a cluster URL, and starts one again on
    its own config and log (a restart); the launcher kills what still runs at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.launcher = ServerLauncher(tmp_path)
        self.url = ""

    def start(self, url: str, count: int, **config: object) -> list[ServerProcess]:
        self.url = url
        return [
            self.launcher.start(
                replica_config(self.tmp_path, f"r{index}", **config),  # type: ignore[arg-type]
                args=("--cluster", url),
            )
            for index in range(count)
        ]

    def again(self, index: int) -> ServerProcess:
        config = self.tmp_path / f"r{index}.toml"
        return self.launcher.start(config, args=("--cluster", self.url))


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    """See :class:`Replicas`."""
    started = Replicas(tmp_path)
    yield started
    started.launcher.close_all()


@pytest.fixture
def start_replicas(replicas: Replicas) -> Callable[..., list[ServerProcess]]:
    """Start N replicas joined to a cluster URL."""
    return replicas.start


def _charge(stub_: pb_grpc.RouterServiceStub, cost: float = COST) -> bool:
    """Route for tenant acme and report ``cost``; False when the cap refused the Route."""
    try:
        decision = stub_.Route(
            pb.RouteRequest(prompt="Summarise this paragraph."),
            metadata=acme(),
            timeout=CALL_TIMEOUT_S,
        )
    except grpc.RpcError as error:
        _expect(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "budget")
        return False
    stub_.Feedback(
        pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0, cost_usd=cost),
        metadata=acme(),
        timeout=CALL_TIMEOUT_S,
    )
    return True


def _expect(error: grpc.RpcError, code: grpc.StatusCode, text: str) -> None:
    """Raise AssertionError unless ``error`` has ``code`` and details containing ``text``."""
    got = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else ""
    if got != code or text not in (details or ""):
        raise AssertionError(f"expected {code} with {text!r}, got {got}: {details}")


def _shared_spend(server: ValkeyProcess) -> float:
    """Every replica's charged spend of tenant acme as the valkey-server holds it."""
    client = server.client()
    total = 0.0
    for key in client.scan_iter("banditroute:budget:acme:*"):
        total += sum(float(v) for f, v in client.hgetall(key).items() if f.startswith(b"s:"))
    return total


def test_a_hard_cap_holds_across_three_replicas(
    valkey_server: ValkeyProcess, start_replicas: Callable[..., list[ServerProcess]]
) -> None:
    """Tenant acme (cap $1.00 a day) spending $0.30 per call round-robin over three replicas:
    four calls are served (the fourth takes the spend from $0.90 past the cap), every later
    Route on every replica is RESOURCE_EXHAUSTED, not $1.00 per replica; GetStats on every
    replica reports the tenant's spend over all of them."""
    replicas = start_replicas(valkey_server.url, 3)
    stubs = [stub(r.address) for r in replicas]
    served = [_charge(stubs[i % 3][1]) for i in range(15)]
    assert sum(served) == 4
    assert served[:4] == [True] * 4
    assert _shared_spend(valkey_server) == pytest.approx(4 * COST)
    for _, replica in stubs:  # each replica's GetStats gives the tenant's spend on all of them
        stats = replica.GetStats(pb.GetStatsRequest(), metadata=acme(), timeout=CALL_TIMEOUT_S)
        (budget,) = stats.budgets
        assert budget.spend_usd == pytest.approx(4 * COST)
        assert budget.limit_usd == 1.0
    for channel, _ in stubs:
        channel.close()


def test_concurrent_replicas_overshoot_a_cap_by_at_most_one_request_each(
    valkey_server: ValkeyProcess, start_replicas: Callable[..., list[ServerProcess]]
) -> None:
    """Three clients, one per replica, each charging $0.30 per call as fast as it can until
    refused: the tenant's spend ends under $1.00 plus one request per replica (what can be in
    flight when the cap is crossed), and every replica refuses afterwards."""
    replicas = start_replicas(valkey_server.url, 3)
    stubs = [stub(r.address) for r in replicas]
    served = [0, 0, 0]

    def spend(index: int) -> None:
        while _charge(stubs[index][1]):
            served[index] += 1

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CALL_TIMEOUT_S * 10)
    total = sum(served) * COST
    assert 1.0 <= total < 1.0 + 3 * COST
    assert _shared_spend(valkey_server) == pytest.approx(total)
    assert not any(_charge(replica) for _, replica in stubs)
    for channel, _ in stubs:
        channel.close()


def test_a_rate_limit_holds_across_replicas(
    valkey_server: ValkeyProcess, start_replicas: Callable[..., list[ServerProcess]]
) -> None:
    """A model limited to LIMITED_RPM requests a minute, asked for round-robin over three
    replicas, is admitted exactly LIMITED_RPM times in the minute in all (not three times
    that); the refusals name the limit across replicas."""
    replicas = start_replicas(valkey_server.url, 3)
    stubs = [stub(r.address) for r in replicas]
    admitted = 0
    for index in range(3 * LIMITED_RPM):
        try:
            stubs[index % 3][1].Route(
                pb.RouteRequest(prompt="hi", candidate_models=[LIMITED]), timeout=CALL_TIMEOUT_S
            )
            admitted += 1
        except grpc.RpcError as error:
            _expect(error, grpc.StatusCode.FAILED_PRECONDITION, "across replicas")
    assert admitted == LIMITED_RPM
    for channel, _ in stubs:
        channel.close()


def test_a_breaker_opened_on_one_replica_keeps_the_model_out_on_another(
    valkey_server: ValkeyProcess, start_replicas: Callable[..., list[ServerProcess]]
) -> None:
    """Failures reported to replica A open the model's breaker there; replica B then shows
    the breaker open and refuses Routes that only the model could serve."""
    first, second = start_replicas(valkey_server.url, 2)
    (a_channel, a), (b_channel, b) = stub(first.address), stub(second.address)
    # Two tenants can call (acme with its key, default without), so the breaker needs both
    # failing (health.min_tenants): five failures in a row each (health.consecutive_failures).
    for metadata in ((), acme()):
        for _ in range(5):
            decision = a.Route(
                pb.RouteRequest(prompt="hi", candidate_models=[LIMITED]),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )
            a.Feedback(
                pb.FeedbackRequest(
                    decision_id=decision.decision_id, status=pb.OUTCOME_STATUS_ERROR
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )

    def open_on_b() -> bool:
        stats = b.GetStats(pb.GetStatsRequest(), timeout=CALL_TIMEOUT_S)
        return any(h.model == LIMITED and h.state == "open" for h in stats.health)

    wait_for(open_on_b, "the breaker open on replica B")
    with pytest.raises(grpc.RpcError) as caught:
        b.Route(pb.RouteRequest(prompt="hi", candidate_models=[LIMITED]), timeout=CALL_TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "on replica r0" in (caught.value.details() or "")  # type: ignore[attr-defined]
    a_channel.close()
    b_channel.close()


def test_valkey_killed_under_load_routes_answer_and_spend_reconciles(
    valkey_server: ValkeyProcess, start_replicas: Callable[..., list[ServerProcess]]
) -> None:
    """Three replicas under a steady Route+Feedback load (tenant acme, $0.01 a call, a cap
    far away); valkey-server is killed (SIGKILL) and restarted empty. Every call is answered
    throughout, GetStats shows the replicas degraded while it is down and not after, and the
    spend the server holds at the end is exactly what the acknowledged feedback charged:
    nothing lost, nothing counted twice."""
    replicas = start_replicas(valkey_server.url, 3, cap_usd=10_000.0)
    stubs = [stub(r.address) for r in replicas]
    stop = threading.Event()
    acknowledged = [0] * 3
    failures: list[str] = []

    def load(index: int) -> None:
        _, replica = stubs[index]
        while not stop.is_set():
            try:
                if _charge(replica, 0.01):
                    acknowledged[index] += 1
            except (grpc.RpcError, AssertionError) as error:
                failures.append(repr(error)[:300])
                return

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: min(acknowledged) >= 20, "load before the kill")
        valkey_server.kill()
        wait_for(lambda: all(cluster_of(s).degraded for _, s in stubs), "every replica degraded")
        during = list(acknowledged)
        wait_for(
            lambda: all(a >= d + 20 for a, d in zip(acknowledged, during, strict=True)),
            "load while degraded",
        )
        valkey_server.restart()
        wait_for(lambda: not any(cluster_of(s).degraded for _, s in stubs), "recovery")
        after = list(acknowledged)
        wait_for(
            lambda: all(a >= d + 20 for a, d in zip(acknowledged, after, strict=True)),
            "load after the restart",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(CALL_TIMEOUT_S)
    assert failures == []
    total = sum(acknowledged) * 0.01
    wait_for(lambda: _shared_spend(valkey_server) == pytest.approx(total), "spend reconciled")
    for channel, _ in stubs:
        channel.close()


def test_a_replica_killed_and_restarted_on_its_log_counts_its_spend_once(
    valkey_server: ValkeyProcess, replicas: Replicas
) -> None:
    """A replica that charged $0.60 is killed (SIGKILL) and started again on its log: it reads
    its spend back and writes it under the same id (by default derived from its log), so the
    shared spend stays $0.60 (not $1.20) and its next charge makes $0.90."""
    first, _ = replicas.start(valkey_server.url, 2, cap_usd=10.0, named=False)
    channel, to_first = stub(first.address)
    assert _charge(to_first)
    assert _charge(to_first)
    assert _shared_spend(valkey_server) == pytest.approx(2 * COST)
    channel.close()
    first.kill()
    again = replicas.again(0)
    channel, to_again = stub(again.address)
    wait_for(lambda: not cluster_of(to_again).degraded, "the restarted replica joined")
    assert _shared_spend(valkey_server) == pytest.approx(2 * COST)
    assert _charge(to_again)
    assert _shared_spend(valkey_server) == pytest.approx(3 * COST)
    channel.close()
