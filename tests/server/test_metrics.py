"""Prometheus metrics (issue 15): a real server with ``server.metrics_port`` is called, its
HTTP endpoint scraped and the exposition parsed with prometheus-client's own parser."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from api_client import CALL_TIMEOUT_S
from fault_helpers import ServerLauncher, worker_pid, worker_stub, workers_config
from prometheus_client.parser import text_string_to_metric_families

from banditroute.config import load_settings, settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.outcomes import OutcomeStatus
from banditroute.policies.uniform import UniformPolicy
from banditroute.server.app import Service
from banditroute.server.metrics import ServiceMetrics
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb
from banditroute.v1 import router_pb2_grpc as pb_grpc

WORKERS_START_TIMEOUT_S = 120.0
"""Longest wait for a two-worker server to listen (a loaded machine starts them slowly)."""

ACME_KEY = "acme-metrics-key"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A loopback port free at the time of asking."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(address: str) -> Samples:
    """GET /metrics and parse it: every sample by (name, labels)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=CALL_TIMEOUT_S) as reply:
        text = reply.read().decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every series of a sample name."""
    return {labels: v for (n, labels), v in samples.items() if n == name}


def fails(call: Callable[[], Any], code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code  # type: ignore[attr-defined]


def test_metrics_endpoint_counts_calls_choices_spend_and_live_state(
    make_service: Callable[..., Service],
) -> None:
    """A server with metrics_port serves /metrics: calls by method and status code (an
    INVALID_ARGUMENT and an UNAUTHENTICATED too) with latency histograms, choices by model and
    objective, spend by configured tenant name, every catalogue model's breaker state, the
    policy's updates and version, the pending decisions and the journal backlog."""
    port = free_port()
    service = make_service(
        {
            "tenants": [{"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)]}],
        },
        metrics_port=port,
    )
    assert service.metrics_address == f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.RouterServiceStub(channel)
    acme = [("x-api-key", ACME_KEY)]
    try:
        first = stub.Route(pb.RouteRequest(prompt="Sum 2 and 3."), timeout=CALL_TIMEOUT_S)
        second = stub.Route(
            pb.RouteRequest(prompt="Name a colour.", objective="economy"),
            metadata=acme, timeout=CALL_TIMEOUT_S,
        )  # fmt: skip
        stub.Route(pb.RouteRequest(prompt="Say hi."), timeout=CALL_TIMEOUT_S)
        fails(lambda: stub.Route(pb.RouteRequest(prompt=""), timeout=CALL_TIMEOUT_S),
              grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
        fails(
            lambda: stub.Route(pb.RouteRequest(prompt="x"), metadata=[("x-api-key", "wrong")],
                               timeout=CALL_TIMEOUT_S),
            grpc.StatusCode.UNAUTHENTICATED,
        )  # fmt: skip
        stub.Feedback(pb.FeedbackRequest(decision_id=first.decision_id, quality=0.9,
                                         cost_usd=0.25), timeout=CALL_TIMEOUT_S)  # fmt: skip
        stub.Feedback(pb.FeedbackRequest(decision_id=second.decision_id, quality=0.5,
                                         cost_usd=0.125), metadata=acme,
                      timeout=CALL_TIMEOUT_S)  # fmt: skip
        # A repeat charges nothing more; a quality out of range is INVALID_ARGUMENT.
        stub.Feedback(pb.FeedbackRequest(decision_id=first.decision_id, quality=0.9,
                                         cost_usd=0.25), timeout=CALL_TIMEOUT_S)  # fmt: skip
        fails(
            lambda: stub.Feedback(pb.FeedbackRequest(decision_id=first.decision_id, quality=2.0),
                                  timeout=CALL_TIMEOUT_S),
            grpc.StatusCode.INVALID_ARGUMENT,
        )  # fmt: skip
        samples = scrape(f"127.0.0.1:{port}")
    finally:
        channel.close()
    calls = "banditroute_rpcs_total"
    assert value(samples, calls, rpc="Route", code="OK") == 3
    assert value(samples, calls, rpc="Route", code="INVALID_ARGUMENT") == 1
    assert value(samples, calls, rpc="Route", code="UNAUTHENTICATED") == 1
    assert value(samples, calls, rpc="Feedback", code="OK") == 3
    assert value(samples, calls, rpc="Feedback", code="INVALID_ARGUMENT") == 1
    latency = "banditroute_rpc_duration_seconds_count"
    assert value(samples, latency, rpc="Route", code="OK") == 3
    assert value(samples, latency, rpc="Feedback", code="INVALID_ARGUMENT") == 1
    assert value(samples, "banditroute_rpc_duration_seconds_bucket",
                 rpc="Route", code="OK", le="+Inf") == 3  # fmt: skip
    choices = series(samples, "banditroute_route_choices_total")
    assert sum(choices.values()) == 3
    catalogue = set(service.settings.catalog.ids)
    assert {dict(labels)["model"] for labels in choices} <= catalogue
    by_objective: dict[str, float] = {}
    for labels, count in choices.items():
        objective = dict(labels)["objective"]
        by_objective[objective] = by_objective.get(objective, 0) + count
    assert by_objective == {"balanced": 2, "economy": 1}
    assert value(samples, "banditroute_route_choices_total", model=first.model,
                 objective="balanced", sticky="false") >= 1  # fmt: skip
    spend = series(samples, "banditroute_spend_usd_total")
    assert spend == {
        frozenset({("tenant", "default")}): 0.25,
        frozenset({("tenant", "acme")}): 0.125,
    }
    breakers = series(samples, "banditroute_breaker_state")
    assert {dict(labels)["model"] for labels in breakers} == catalogue
    assert set(breakers.values()) == {0.0}
    assert value(samples, "banditroute_policy_updates", policy="default") == 2
    info = series(samples, "banditroute_policy_info")
    [(labels, one)] = info.items()
    assert one == 1
    assert dict(labels)["version"].startswith("costaware:")
    assert not re.search(r":\d+$", dict(labels)["version"])  # no update count: stays stable
    assert value(samples, "banditroute_pending_decisions") == 3
    assert value(samples, "banditroute_journal_backlog_bytes") >= 0


def test_breaker_gauge_shows_an_open_breaker(make_service: Callable[..., Service]) -> None:
    """Failures reported for a model open its breaker, and the scrape says 2 (open) for it."""
    port = free_port()
    service = make_service({"health": {"consecutive_failures": 2}}, metrics_port=port)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.RouterServiceStub(channel)
    try:
        model = ""
        for _ in range(2):
            decision = stub.Route(pb.RouteRequest(prompt="Sum 2 and 3.",
                                                  candidate_models=[model] if model else []),
                                  timeout=CALL_TIMEOUT_S)  # fmt: skip
            model = decision.model
            stub.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id,
                                             status=pb.OUTCOME_STATUS_ERROR),
                          timeout=CALL_TIMEOUT_S)  # fmt: skip
        samples = scrape(f"127.0.0.1:{port}")
    finally:
        channel.close()
    assert value(samples, "banditroute_breaker_state", model=model) == 2
    others = series(samples, "banditroute_breaker_state")
    assert sum(others.values()) == 2


def test_metrics_listen_on_a_bracketed_ipv6_host(make_service: Callable[..., Service]) -> None:
    """metrics_host in gRPC's bracketed IPv6 form ("[::1]", as --host writes it) listens."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = int(probe.getsockname()[1])
    except OSError:
        pytest.skip("no IPv6 loopback here")
    service = make_service(metrics_port=port, metrics_host="[::1]")
    assert service.metrics_address == f"[::1]:{port}"
    assert "banditroute_pending_decisions" in {name for name, _ in scrape(f"[::1]:{port}")}


def test_sessions_and_sticky_choices_are_counted(make_service: Callable[..., Service]) -> None:
    """The live sessions gauge counts sessions, and a session's sticky decisions are counted
    with sticky="true" (its first one with sticky="false")."""
    port = free_port()
    service = make_service(metrics_port=port)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.RouterServiceStub(channel)
    try:
        for session in ("a", "a", "a", "b"):
            stub.Route(pb.RouteRequest(prompt="Hello there.", session_id=session),
                       timeout=CALL_TIMEOUT_S)  # fmt: skip
        samples = scrape(f"127.0.0.1:{port}")
    finally:
        channel.close()
    assert value(samples, "banditroute_sessions") == 2
    choices = series(samples, "banditroute_route_choices_total")
    by_sticky = {"true": 0.0, "false": 0.0}
    for labels, count in choices.items():
        by_sticky[dict(labels)["sticky"]] += count
    assert by_sticky == {"true": 2, "false": 2}


def test_policy_info_follows_a_promotion(make_service: Callable[..., Service]) -> None:
    """After a promotion the new policy's version series is 1 and the replaced one's 0 (not a
    second live version)."""
    port = free_port()
    service = make_service(metrics_port=port)
    before = scrape(f"127.0.0.1:{port}")
    [(old_labels, one)] = series(before, "banditroute_policy_info").items()
    assert one == 1
    service.router.promote(UniformPolicy(), {"reason": "test"})
    info = series(scrape(f"127.0.0.1:{port}"), "banditroute_policy_info")
    assert info[old_labels] == 0
    [new] = [dict(labels)["version"] for labels, v in info.items() if v == 1]
    assert new.startswith("uniform")


def test_no_endpoint_without_metrics_port(make_service: Callable[..., Service]) -> None:
    """metrics_port absent (0): no endpoint, no metrics kept."""
    service = make_service()
    assert service.metrics is None
    assert service.metrics_address is None


def test_metrics_port_in_use_is_a_start_up_error_naming_the_key(
    make_service: Callable[..., Service],
) -> None:
    """A metrics port another socket holds stops the start with ConfigError naming
    server.metrics_port and the option that moves it (the CLI prints it in one line and
    exits 2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=r"server\.metrics_port") as caught:
            make_service(metrics_port=port)
    assert caught.value.field == "server.metrics_port"
    assert "--metrics-port" in str(caught.value)


def test_metrics_settings_are_validated_and_overridable() -> None:
    """metrics_port outside 0..65535 is a ConfigError naming it; metrics_host stays on loopback
    when the service listens on every interface (the endpoint is unauthenticated), follows the
    serve host only when set empty; --metrics-port and --metrics-host override the file."""
    with pytest.raises(ConfigError, match=r"server\.metrics_port"):
        settings_from_mapping({"server": {"metrics_port": 70000}})
    settings = settings_from_mapping({"server": {"host": "0.0.0.0"}})
    assert settings.server.metrics_port == 0
    assert settings.server.metrics_address == "127.0.0.1"
    same = settings_from_mapping({"server": {"host": "0.0.0.0", "metrics_host": ""}})
    assert same.server.metrics_address == "0.0.0.0"
    assert settings_from_mapping({"server": {"metrics_host": "10.0.0.1"}}).server.metrics_address \
        == "10.0.0.1"  # fmt: skip
    overridden = load_settings().with_overrides(metrics_port=9100, metrics_host="0.0.0.0")
    assert overridden.server.metrics_port == 9100
    assert overridden.server.metrics_address == "0.0.0.0"


def test_core_does_not_import_prometheus_or_grpc() -> None:
    """The router and the policies work without prometheus_client or grpc imported."""
    code = (
        "import sys, banditroute.router, banditroute.policies.factory, banditroute.observe; "
        "bad = [m for m in ('prometheus_client', 'grpc') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


_METRICS_LINE = re.compile(r"\blistening\b.*\bmetrics=(\S+:\d+)")


def test_workers_metrics_add_up_over_every_worker(launcher: ServerLauncher, tmp_path: Path) -> None:
    """With --workers 2 the supervisor serves every worker's figures together (multiprocess
    mode): calls reaching either worker on their own connections are all counted, and the
    pending decisions add up over the workers."""
    port = free_port()
    server = launcher.start(
        workers_config(tmp_path, server=f"metrics_port = {port}"), timeout_s=WORKERS_START_TIMEOUT_S
    )
    match = _METRICS_LINE.search(server.log_text())
    assert match is not None, server.log_text()
    address = match.group(1)
    routes = 12
    decisions = []
    for _ in range(routes):
        channel, stub = worker_stub(server.address)
        try:
            decisions.append(stub.Route(pb.RouteRequest(prompt="Sum 2 and 3."),
                                        timeout=CALL_TIMEOUT_S))  # fmt: skip
        finally:
            channel.close()
    owners = {d.decision_id[:2] for d in decisions}
    channel, stub = worker_stub(server.address)
    try:
        for decision in decisions[:4]:  # some forwarded to the other worker
            stub.Feedback(pb.FeedbackRequest(decision_id=decision.decision_id, quality=1.0,
                                             cost_usd=0.5), timeout=CALL_TIMEOUT_S)  # fmt: skip
    finally:
        channel.close()
    deadline = time.monotonic() + 60.0  # the workers refresh their gauges every 0.2 s
    while True:
        samples = scrape(address)
        if value(samples, "banditroute_pending_decisions") == routes or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert value(samples, "banditroute_pending_decisions") == routes
    assert value(samples, "banditroute_rpcs_total", rpc="Route", code="OK") == routes
    # A forwarded Feedback is counted once, where the client's call arrived.
    assert value(samples, "banditroute_rpcs_total", rpc="Feedback", code="OK") == 4
    assert sum(series(samples, "banditroute_route_choices_total").values()) == routes
    assert value(samples, "banditroute_spend_usd_total", tenant="default") == 2.0
    breakers = series(samples, "banditroute_breaker_state")
    assert len(breakers) == len(load_settings().catalog.ids)  # one series per model, not per pid
    assert len(owners) >= 1


def _scrape_until(address: str, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` holds (the workers refresh their gauges every 0.2 s), within a
    bound that only catches a hang; the last scrape."""
    deadline = time.monotonic() + 120.0
    samples = scrape(address)
    while not done(samples) and time.monotonic() < deadline:
        time.sleep(0.1)
        samples = scrape(address)
    return samples


def test_workers_metrics_survive_a_replaced_worker(
    launcher: ServerLauncher, tmp_path: Path
) -> None:
    """kill -9 of a worker: its calls stay counted, and once the replacement has restored its
    pending decisions the pending gauge counts them once (the dead process's live gauges are
    dropped, not added to the replacement's)."""
    port = free_port()
    server = launcher.start(
        workers_config(tmp_path, server=f"metrics_port = {port}"),
        timeout_s=WORKERS_START_TIMEOUT_S,
    )
    match = _METRICS_LINE.search(server.log_text())
    assert match is not None, server.log_text()
    address = match.group(1)
    owners: list[str] = []
    for turn in range(200):
        channel, stub = worker_stub(server.address)
        try:
            decision = stub.Route(pb.RouteRequest(prompt=f"Question {turn}?"),
                                  timeout=CALL_TIMEOUT_S)  # fmt: skip
        finally:
            channel.close()
        owners.append(decision.decision_id[:2])
        if len(owners) >= 6 and "01" in owners and "00" in owners:
            break
    routes = len(owners)
    assert "01" in owners
    samples = _scrape_until(address, lambda s: value(s, "banditroute_pending_decisions") == routes)
    assert value(samples, "banditroute_pending_decisions") == routes
    os.kill(worker_pid(server, 1), signal.SIGKILL)
    deadline = time.monotonic() + 120.0
    while "worker_restarted" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()
        time.sleep(0.1)
    samples = _scrape_until(address, lambda s: value(s, "banditroute_pending_decisions") == routes)
    assert value(samples, "banditroute_pending_decisions") == routes
    assert value(samples, "banditroute_rpcs_total", rpc="Route", code="OK") == routes
    assert sum(series(samples, "banditroute_route_choices_total").values()) == routes


class _NoBacklog:
    """A decision log stand-in for ServiceMetrics.bind: nothing buffered."""

    backlog_bytes = 0


def test_a_model_a_reload_removed_leaves_no_open_breaker_series(
    make_router: Callable[..., Any],
) -> None:
    """A model whose breaker is open and that a reload then takes out of the catalogue (the
    usual cure for a broken model) no longer shows as open: an alert on breaker_state == 2
    would otherwise fire for it forever."""
    entries = {
        name: {"id": name, "provider": name, "input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
        for name in ("alpha", "beta")
    }
    both = settings_from_mapping({"models": list(entries.values())})
    router, _ = make_router(both)
    metrics = ServiceMetrics(served=True)
    metrics.bind(router, _NoBacklog())  # type: ignore[arg-type]
    for _ in range(both.health.consecutive_failures):
        router.health.record_outcome("alpha", OutcomeStatus.ERROR, 100.0, "default")
    assert metrics.registry is not None
    assert metrics.registry.get_sample_value("banditroute_breaker_state", {"model": "alpha"}) == 2
    router.reload(settings_from_mapping({"models": [entries["beta"]]}))
    assert metrics.registry.get_sample_value("banditroute_breaker_state", {"model": "alpha"}) in (
        None,
        0,
    )
    assert metrics.registry.get_sample_value("banditroute_breaker_state", {"model": "beta"}) == 0
