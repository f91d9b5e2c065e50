"""Budgets, limits and breakers shared through a real valkey-server by in-process routers, each
joined to the cluster as its own replica (the router, scripts and pushes of a real replica,
without gRPC around them)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import pytest
from replica_helpers import wait_for
from valkey_helpers import ValkeyProcess

from banditroute.cluster import join_cluster
from banditroute.cluster.replica import ClusterReplica
from banditroute.config import Settings, settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import FailedPrecondition, ResourceExhausted
from banditroute.outcomes import OutcomeStatus
from banditroute.policies.uniform import UniformPolicy
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

MODEL = "mistralai/mistral-7b-chat"


def cluster_settings(
    url: str, replica: str, heartbeat_s: float = 0.2, timeout_s: float = 10.0, **extra: Any
) -> Settings:
    """Settings of one replica: tenant ``acme`` with a $1.00 daily cap, fast beats, and
    patient commands (a slow answer on a loaded machine must not make a replica decide alone;
    a killed server refuses connections at once)."""
    data: dict[str, Any] = {
        "cluster": {
            "url": url,
            "replica_id": replica,
            "heartbeat_s": heartbeat_s,
            "retry_s": 0.2,
            "timeout_s": timeout_s,
        },
        "tenants": [{"name": "acme", "budget": {"limit_usd": 1.0, "period": "day"}}],
    }
    for section, values in extra.items():
        data[section] = values
    return settings_from_mapping(data)


Replica = tuple[Router, ClusterReplica]


@pytest.fixture
def make_replica() -> Iterator[Callable[..., Replica]]:
    """Build in-process replicas (router + joined cluster parts); stopped at teardown."""
    started: list[ClusterReplica] = []

    def make(settings: Settings) -> Replica:
        router = Router(settings, UniformPolicy(), MemoryLog())
        replica = join_cluster(settings, router)
        replica.start()
        started.append(replica)
        return router, replica

    yield make
    for replica in started:
        replica.stop()


def route(router: Router, tenant: str = "acme", **query: Any) -> str:
    return router.route(RouteQuery(prompt="hello there", tenant=tenant, **query)).decision_id


def test_a_cap_holds_across_replicas(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """Three replicas charging one tenant $0.30 per request, $1.00 cap: together they admit
    while spend plus reservations is under the cap and then refuse everywhere, so the total
    charged ends at most one request over the cap (not three times the cap)."""
    replicas = [make_replica(cluster_settings(valkey_server.url, f"r{i}")) for i in range(3)]
    charged = 0.0
    refused = 0
    for index in range(30):
        router, _ = replicas[index % 3]
        decision = _route_or_none(router)
        if decision is None:
            refused += 1
            continue
        router.feedback(FeedbackReport(decision, cost_usd=0.3, tenant="acme"))
        charged += 0.3
        _wait_pushed(valkey_server, charged)
    assert refused == 26
    assert charged == pytest.approx(1.2)


def _route_or_none(router: Router) -> str | None:
    """A decision for tenant acme, or None when its cap refuses (across replicas)."""
    try:
        return route(router)
    except ResourceExhausted as error:
        if "all replicas" not in error.message:
            raise
        return None


def _wait_pushed(server: ValkeyProcess, total: float) -> None:
    client = server.client()

    def pushed() -> float:
        spend = 0.0
        for key in client.scan_iter("banditroute:budget:acme:*"):
            for field, value in client.hgetall(key).items():
                if field.startswith(b"s:"):
                    spend += float(value)
        return spend

    wait_for(lambda: pushed() == pytest.approx(total), f"spend {total} pushed")


def _models_with(model: str, **limits: int) -> list[dict[str, Any]]:
    """The default catalogue with ``limits`` set on ``model``."""
    text = resources.files("banditroute").joinpath("default_config.toml").read_text("utf-8")
    models: list[dict[str, Any]] = tomllib.loads(text)["models"]
    for entry in models:
        if entry["id"] == model:
            entry.update(limits)
    return models


def test_an_in_flight_limit_holds_across_replicas(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """A model with max_in_flight = 2 takes two routes in flight over all replicas, not two
    on each; a feedback frees a slot for any replica."""
    settings = [
        cluster_settings(valkey_server.url, f"r{i}", models=_models_with(MODEL, max_in_flight=2))
        for i in range(2)
    ]
    (first, _), (second, _) = (make_replica(s) for s in settings)
    only = {"candidate_models": (MODEL,), "tenant": "default"}
    held = [route(first, **only), route(second, **only)]
    with pytest.raises(FailedPrecondition, match="across replicas"):
        route(first, **only)
    first.feedback(FeedbackReport(held[0], cost_usd=0.0))
    wait_for(lambda: _admits(second, only), "a freed slot")


def _admits(router: Router, query: dict[str, Any]) -> bool:
    try:
        route(router, **query)
    except FailedPrecondition:
        return False
    return True


def test_a_breaker_opened_on_one_replica_keeps_the_model_out_on_another(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """Failures reported to replica A open the model's breaker there; replica B's breaker
    opens too (within the polling period) and B no longer routes to the model; an operator's
    reset on A closes it on B as well."""
    (first, _), (second, _) = (
        make_replica(cluster_settings(valkey_server.url, name)) for name in ("a", "b")
    )
    only = {"candidate_models": (MODEL,), "tenant": "default"}
    for _ in range(first.settings.health.consecutive_failures):
        decision = route(first, **only)
        first.feedback(FeedbackReport(decision, status=OutcomeStatus.ERROR))
    assert first.health.breaker_state(MODEL) == "open"
    wait_for(lambda: second.health.breaker_state(MODEL) == "open", "B's breaker open")
    with pytest.raises(FailedPrecondition, match="on replica a"):
        route(second, **only)
    first.health.reset(MODEL)
    wait_for(lambda: second.health.breaker_state(MODEL) == "closed", "B's breaker closed")


def test_spend_charged_while_the_server_is_down_reaches_it_once_it_is_back(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """With valkey-server killed, a replica keeps routing, degraded; its cap holds against
    the other replica's last known spend plus its own; once the server is back (empty: it kept
    nothing), every replica's spend is written again, each counted once."""
    (first, a), (second, _) = (
        make_replica(cluster_settings(valkey_server.url, name)) for name in ("a", "b")
    )
    for router in (first, second):
        router.feedback(FeedbackReport(route(router), cost_usd=0.3, tenant="acme"))
    _wait_pushed(valkey_server, 0.6)
    route(first)  # learns the other replica's spend (0.3) from the script's answer
    valkey_server.kill()
    decision = route(first)  # the server is gone: decided alone
    assert a.link.degraded
    first.feedback(FeedbackReport(decision, cost_usd=0.3, tenant="acme"))
    # Last known: b's 0.3, plus a's own 0.6 now: 0.9 < 1.0, one more is admitted...
    first.feedback(FeedbackReport(route(first), cost_usd=0.2, tenant="acme"))
    # ...and then a's own 0.8 plus b's 0.3 passes the cap.
    with pytest.raises(ResourceExhausted, match="unreachable"):
        route(first)
    valkey_server.restart()
    _wait_pushed(valkey_server, 1.1)
    with pytest.raises(ResourceExhausted, match="all replicas"):
        route(second)


def test_while_the_server_is_down_a_replica_takes_its_share_of_a_limit(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """With two replicas known alive and valkey-server gone, a model limited to four routes
    in flight takes two on each replica (limit / last known replicas), and says so."""
    settings = [
        cluster_settings(valkey_server.url, f"r{i}", models=_models_with(MODEL, max_in_flight=4))
        for i in range(2)
    ]
    (first, a), (_, b) = (make_replica(s) for s in settings)
    wait_for(lambda: a.registry.beat() == 2, "two replicas registered")
    valkey_server.kill()
    only = {"candidate_models": (MODEL,), "tenant": "default"}
    route(first, **only)
    route(first, **only)
    assert a.link.degraded
    with pytest.raises(FailedPrecondition, match=r"in-flight limit 2 \(1/2 of 4\)"):
        route(first, **only)
    assert b.registry.alive == 2


def test_a_replica_restarted_under_its_id_frees_the_slots_its_previous_process_held(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """Replica A holds the only in-flight slot of a model and dies without leaving (its
    heartbeat stops, the registry still lists it). Started again under the same id, A writes
    its figures afresh, so the slot is free for replica B at once instead of counting
    forever (the restarted A keeps the id alive)."""
    models = _models_with(MODEL, max_in_flight=1)
    # Slow beats (a replica counts as gone after 15 s of silence): nothing but the restart
    # can free the slot within the wait.
    beats = {"heartbeat_s": 5.0, "models": models}
    only = {"candidate_models": (MODEL,), "tenant": "default"}
    (first, a) = make_replica(cluster_settings(valkey_server.url, "a", **beats))
    (second, _) = make_replica(cluster_settings(valkey_server.url, "b", **beats))
    route(first, **only)
    a.registry.leave = lambda: None  # type: ignore[method-assign]  # a crash: no goodbye
    a.stop()
    with pytest.raises(FailedPrecondition, match="across replicas"):
        route(second, **only)
    make_replica(cluster_settings(valkey_server.url, "a", **beats))
    wait_for(lambda: _admits(second, only), "the slot freed by a's restart")


def test_a_route_with_nothing_shared_to_check_makes_no_round_trip(
    valkey_server: ValkeyProcess, make_replica: Callable[..., Replica]
) -> None:
    """A tenant without a cap routed to a model without limits runs no admission script;
    a tenant with a cap runs exactly one per Route (slow heartbeats: the beat is a script)."""
    router, _ = make_replica(cluster_settings(valkey_server.url, "a", heartbeat_s=30.0))
    client = valkey_server.client()

    def scripts() -> int:
        stats = client.info("commandstats")
        return sum(int(stats.get(name, {}).get("calls", 0))
                   for name in ("cmdstat_evalsha", "cmdstat_eval"))  # fmt: skip

    route(router)  # the script's first run loads it (NOSCRIPT, then EVALSHA again)
    before = scripts()
    for _ in range(5):
        route(router, tenant="default")
    assert scripts() == before
    for _ in range(5):
        route(router)  # acme, capped
    assert scripts() == before + 5
