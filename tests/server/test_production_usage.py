"""Usage analytics through the gRPC interface and the report CLI: GetStats usage rows per model
and tenant add up to exactly what the clients routed and reported, and ``banditroute report``
prints the same figures and draws them."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

ACME_KEY, ADMIN_KEY = "key-acme-usage", "key-admin-usage"
GPT4 = "gpt-4-1106-preview"
GPT35 = "gpt-3.5-turbo-1106"
MIXTRAL = "mistralai/mixtral-8x7b-chat"
CLI_TIMEOUT_S = 60.0
CONFIG: dict[str, Any] = {
    "auth": {"admin_key_sha256": [hash_key(ADMIN_KEY)]},
    "tenants": [{"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)]}],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (tenant, chosen model, feedback: None or (served model, quality, cost, latency, status))
Sent = tuple[str, str, tuple[str, float, float, float, int] | None]
OK, ERROR = pb.OUTCOME_STATUS_OK, pb.OUTCOME_STATUS_ERROR
WORKLOAD: list[Sent] = [
    ("acme", GPT4, None),
    ("acme", GPT4, (GPT4, 0.9, 0.004, 1000.0, OK)),
    ("acme", GPT4, (GPT4, 0.7, 0.006, 3000.0, OK)),
    ("acme", GPT35, (GPT35, 0.5, 0.0005, 500.0, OK)),
    ("acme", GPT35, (GPT35, 0.0, 0.0, 200.0, ERROR)),
    ("default", GPT35, (MIXTRAL, 0.8, 0.0002, 400.0, OK)),
    ("default", MIXTRAL, (MIXTRAL, 0.6, 0.0003, 600.0, OK)),
]


def _send(service: Service, api: Callable[..., Any]) -> None:
    clients = {"acme": api(service, ACME_KEY), "default": api(service)}
    for tenant, model, outcome in WORKLOAD:
        client = clients[tenant]
        decision = client.route(candidate_models=[model])
        assert decision.model == model
        if outcome is not None:
            served, quality, cost, latency, status = outcome
            client.feedback(
                decision_id=decision.decision_id, model=served, quality=quality,
                cost_usd=cost, latency_ms=latency, status=status,
            )  # fmt: skip


def _expected(model: str, tenant: str) -> dict[str, Any]:
    """Usage of ``model`` by ``tenant`` as GetStats should report it: decisions attributed to
    the model that served (the chosen one when no feedback came)."""
    calls, outcomes = 0, []
    for sent_tenant, chosen, outcome in WORKLOAD:
        served = chosen if outcome is None else outcome[0]
        if sent_tenant == tenant and served == model:
            calls += 1
            if outcome is not None:
                outcomes.append(outcome)
    return {
        "calls": calls,
        "feedback_count": len(outcomes),
        "spend_usd": pytest.approx(sum(o[2] for o in outcomes)),
        "mean_quality": pytest.approx(statistics.fmean(o[1] for o in outcomes)),
        "latency_p50_ms": pytest.approx(statistics.median(o[3] for o in outcomes)),
        "error_rate": pytest.approx(sum(o[4] != OK for o in outcomes) / len(outcomes)),
    }


def _row(usage: pb.UsageStats) -> dict[str, Any]:
    return {
        "calls": usage.calls,
        "feedback_count": usage.feedback_count,
        "spend_usd": usage.spend_usd,
        "mean_quality": usage.mean_quality,
        "latency_p50_ms": usage.latency_p50_ms,
        "error_rate": usage.error_rate,
    }


def test_get_stats_usage_matches_what_was_sent(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """GetStats (admin key) has one usage row per (served model, tenant) with the number of
    decisions, feedbacks, total reported cost, mean quality, median latency and error share
    that the clients sent; a fallback that served is credited, not the chosen model; per-tenant
    totals add up; a tenant key sees only its own rows; a since in the future gives none."""
    service = start_service(CONFIG)
    _send(service, api)
    admin, acme = api(service, ADMIN_KEY), api(service, ACME_KEY)

    usage = admin.stats().usage
    pairs = {(u.model, u.tenant): u for u in usage if u.model and u.tenant}
    expected_pairs = {(chosen if o is None else o[0], tenant) for tenant, chosen, o in WORKLOAD}
    assert set(pairs) == expected_pairs
    for (model, tenant), row in pairs.items():
        assert _row(row) == _expected(model, tenant), (model, tenant)
    totals = {u.tenant: u for u in usage if u.tenant and not u.model}
    assert totals["acme"].calls == 5
    assert totals["default"].calls == 2
    assert totals["acme"].spend_usd == pytest.approx(0.0105)
    grand = [u for u in usage if not u.tenant and not u.model]
    assert len(grand) == 1
    assert grand[0].calls == len(WORKLOAD)

    own = acme.stats().usage
    assert {u.tenant for u in own if u.tenant} == {"acme"}
    assert {(u.model, u.tenant) for u in own if u.model and u.tenant} == {
        p for p in expected_pairs if p[1] == "acme"
    }
    future = Timestamp()
    future.FromSeconds(int(time.time()) + 3600)
    assert list(admin.stats(since=future).usage) == []


def test_a_call_reported_three_times_counts_once_in_get_stats_and_report(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """One GPT-4 call reported three times (combine = first: the later two are
    IGNORED_DUPLICATE) counts once: GetStats and ``report --json`` show one feedback, the first
    report's cost, quality and status, not the sum of the costs and the mean of the three."""
    service = start_service(CONFIG)
    acme = api(service, ACME_KEY)
    decision = acme.route(candidate_models=[GPT4])
    for quality, cost, status in ((0.9, 0.05, OK), (0.1, 0.05, ERROR), (0.3, 0.001, OK)):
        acme.feedback(
            decision_id=decision.decision_id, quality=quality, cost_usd=cost, status=status
        )
    expected = (1, 1, pytest.approx(0.05), pytest.approx(0.9), 0.0)
    (total,) = [u for u in acme.stats().usage if not u.model and u.tenant == "acme"]
    figures = ("calls", "feedback_count", "spend_usd", "mean_quality", "error_rate")
    assert tuple(getattr(total, name) for name in figures) == expected
    service.stop()
    out = tmp_path / "report.json"
    command = [sys.executable, "-m", "banditroute.cli", "report",
               "--log", str(service.settings.log.path), "--json", str(out)]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                         check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    (row,) = [
        s for s in json.loads(out.read_text())["summary"] if not s["model"] and not s["tenant"]
    ]
    figures = ("calls", "feedback", "spend_usd", "mean_quality", "error_rate")
    assert tuple(row[name] for name in figures) == expected


def test_get_stats_usage_starts_at_server_start_by_default(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """Without since, GetStats counts the decisions since this server started (as the API
    documents), not those an earlier run left in the same log; an explicit since reaches
    back."""
    log = {"path": str(tmp_path / "shared.duckdb")}
    first = start_service({**CONFIG, "log": log})
    for _ in range(3):
        api(first).route()
    first.stop()
    second = start_service({**CONFIG, "log": log})
    client = api(second, ADMIN_KEY)
    decision = client.route()
    client.feedback(decision_id=decision.decision_id, quality=1.0)
    grand = [u for u in client.stats().usage if not u.model and not u.tenant]
    assert [u.calls for u in grand] == [1]
    epoch = Timestamp()
    epoch.FromSeconds(0)
    grand = [u for u in client.stats(since=epoch).usage if not u.model and not u.tenant]
    assert [u.calls for u in grand] == [4]


def test_report_cli_prints_models_and_writes_a_png(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """``python -m banditroute.cli report --log FILE --plot out.png`` on a stopped server's
    log exits 0, prints a table naming every model that served and writes a PNG; an unknown
    --bucket exits 2 naming the argument."""
    service = start_service(CONFIG)
    _send(service, api)
    service.stop()
    plot = tmp_path / "usage.png"
    command = [sys.executable, "-m", "banditroute.cli", "report",
               "--log", str(service.settings.log.path)]  # fmt: skip
    run = subprocess.run(
        [*command, "--plot", str(plot)],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    for model in (GPT4, GPT35, MIXTRAL):
        assert model in run.stdout
    assert "acme" in run.stdout
    assert plot.read_bytes()[:8] == PNG_MAGIC
    bad = subprocess.run(
        [*command, "--bucket", "week"],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "--bucket" in bad.stderr


def test_get_stats_rejects_a_bad_since(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """A since timestamp outside the representable range, or at Timestamp's very end (year
    9999's last nanosecond, whose seconds round up to year 10000), is INVALID_ARGUMENT naming
    since (not an internal error); the earliest Timestamp is accepted."""
    client = api(start_service(CONFIG), ADMIN_KEY)
    request = pb.GetStatsRequest()
    request.since.seconds = 10**12
    details = client.fails("GetStats", request, grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("since")
    # Timestamp's largest value, whose float seconds round up to year 10000
    request.since.seconds, request.since.nanos = 253402300799, 999999999
    details = client.fails("GetStats", request, grpc.StatusCode.INVALID_ARGUMENT)
    assert details.startswith("since: ")
    request.since.seconds, request.since.nanos = -62135596800, 0  # its smallest: valid
    client.route()
    assert [u.calls for u in client.stats(since=request.since).usage if not u.model] == [1, 1]


def test_usage_without_quality_reports_zero_with_a_count_not_nan(
    service: Service, api: Callable[..., Any]
) -> None:
    """A model routed to without feedback, or with feedback that gave no quality, has
    quality_count 0 and mean_quality 0 (GetStats used to return NaN, "NaN" in JSON); a model
    with quality reports has their mean and count."""
    client = api(service)
    client.route(candidate_models=[GPT4])
    unrated = client.route(candidate_models=[MIXTRAL])
    client.feedback(decision_id=unrated.decision_id, latency_ms=100.0, status=OK)
    rated = client.route(candidate_models=[GPT35])
    client.feedback(decision_id=rated.decision_id, quality=0.25, status=OK)
    rows = {u.model: u for u in client.stats().usage if u.model and not u.tenant}
    assert (rows[GPT4].feedback_count, rows[GPT4].quality_count) == (0, 0)
    assert (rows[MIXTRAL].feedback_count, rows[MIXTRAL].quality_count) == (1, 0)
    for model in (GPT4, MIXTRAL):
        assert rows[model].mean_quality == 0.0
        assert json.loads(json_format.MessageToJson(rows[model])).get("meanQuality", 0) == 0
    assert (rows[GPT35].mean_quality, rows[GPT35].quality_count) == (0.25, 1)


def test_get_stats_figures_over_nothing_are_zero_with_their_count_never_nan(
    service: Service, api: Callable[..., Any]
) -> None:
    """Usage latencies and error rate of a model routed without feedback, or with feedback
    that gave no latency, and the health latencies of a model without a served answer, are 0
    with latency_count (or feedback_count) 0 (GetStats returned NaN: "NaN" in JSON); a model
    with reported latencies has their percentiles and count in both."""
    client = api(service)
    client.route(candidate_models=[GPT4])
    untimed = client.route(candidate_models=[MIXTRAL])
    client.feedback(decision_id=untimed.decision_id, quality=0.5, status=OK)
    for latency in (100.0, 300.0):
        timed = client.route(candidate_models=[GPT35])
        client.feedback(decision_id=timed.decision_id, latency_ms=latency, status=OK)
    stats = client.stats()
    assert "NaN" not in json_format.MessageToJson(stats)
    usage = {u.model: u for u in stats.usage if u.model and not u.tenant}
    health = {h.model: h for h in stats.health}
    for model, feedback in ((GPT4, 0), (MIXTRAL, 1)):
        row = usage[model]
        assert (row.feedback_count, row.latency_count) == (feedback, 0)
        assert (row.latency_p50_ms, row.latency_p95_ms) == (0.0, 0.0)
        assert health[model].latency_count == 0
        assert (health[model].latency_p50_ms, health[model].latency_p95_ms) == (0.0, 0.0)
    assert usage[GPT4].error_rate == 0.0
    assert (usage[GPT35].latency_count, usage[GPT35].latency_p50_ms) == (2, 200.0)
    assert (health[GPT35].latency_count, health[GPT35].latency_p50_ms) == (2, 200.0)
