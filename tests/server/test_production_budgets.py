"""Per-tenant budgets through the gRPC interface: spend reported by Feedback counts against the
tenant's period budget, a hard cap refuses new routes with RESOURCE_EXHAUSTED, GetStats shows
the figures, and a per-request target raises the pacing multiplier while spend runs over."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from banditroute.config import settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service
from banditroute.tenancy import hash_key
from banditroute.v1 import router_pb2 as pb

ACME_KEY, BETA_KEY, ADMIN_KEY = "key-acme-budget", "key-beta-budget", "key-admin-budget"
LIMIT_USD = 0.01
TARGET_USD = 0.001
COST_USD = 0.004
GPT4 = "gpt-4-1106-preview"
GPT35 = "gpt-3.5-turbo-1106"


def _config(budget: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": {"kind": "fixed", "fixed_model": GPT4, "min_probability": 0.0},
        "auth": {"admin_key_sha256": [hash_key(ADMIN_KEY)]},
        "tenants": [
            {"name": "acme", "api_key_sha256": [hash_key(ACME_KEY)], "budget": budget},
            {"name": "beta", "api_key_sha256": [hash_key(BETA_KEY)]},
        ],
    }


def _budget(client: Any, tenant: str = "acme") -> pb.BudgetStatus:
    rows = [b for b in client.stats().budgets if b.tenant == tenant]
    assert len(rows) == 1
    return rows[0]


def test_hard_cap_refuses_routes_once_spend_reaches_it(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With limit_usd = 0.01, routes succeed while reported spend is under it; once feedback
    costs reach it, Route is RESOURCE_EXHAUSTED with details starting "budget" (an
    idempotent replay of an earlier request_id still answers), feedback for decisions routed
    before the cap is still accepted and counted, and another tenant is unaffected. GetStats
    shows the period, its UTC start, spend, limit and mean cost."""
    service = start_service(_config({"period": "day", "limit_usd": LIMIT_USD}))
    acme, beta = api(service, ACME_KEY), api(service, BETA_KEY)
    decisions = [acme.route(request_id=f"r{i}") for i in range(4)]
    for decision in decisions[:2]:
        acme.feedback(decision_id=decision.decision_id, quality=1.0, cost_usd=COST_USD)
    assert acme.route().model  # 0.008 spent: still under the cap
    acme.feedback(decision_id=decisions[2].decision_id, quality=1.0, cost_usd=COST_USD)

    details = acme.fails("Route", pb.RouteRequest(prompt="hi"), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert details.startswith("budget")
    assert acme.route(request_id="r0").replayed is True
    ack = acme.feedback(decision_id=decisions[3].decision_id, quality=1.0, cost_usd=COST_USD)
    assert ack.feedback_count == 1
    assert beta.route().model

    status = _budget(acme)
    assert status.period == "day"
    assert status.spend_usd == pytest.approx(4 * COST_USD)
    assert status.limit_usd == LIMIT_USD
    assert status.mean_cost_usd == pytest.approx(COST_USD)
    assert status.target_usd_per_request == 0.0
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert status.period_start.ToDatetime(tzinfo=datetime.UTC) == today
    assert [b.tenant for b in api(service, BETA_KEY).stats().budgets] == []
    assert [b.tenant for b in api(service, ADMIN_KEY).stats().budgets] == ["acme"]


def test_token_priced_and_fallback_feedback_count_as_spend(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """Feedback without cost_usd is priced from input/output tokens at the served model's
    prices; when the chosen model failed and a fallback served, the fallback's cost counts
    too (a second feedback for the same model does not count twice)."""
    service = start_service(_config({"period": "hour", "limit_usd": 1.0}))
    acme = api(service, ACME_KEY)
    decision = acme.route(candidate_models=[GPT4, GPT35])
    assert decision.model == GPT4
    acme.feedback(decision_id=decision.decision_id, status=pb.OUTCOME_STATUS_TIMEOUT, cost_usd=0.0)
    acme.feedback(
        decision_id=decision.decision_id, model=GPT35, input_tokens=1000, output_tokens=500
    )
    fallback_cost = (1000 * 1.0 + 500 * 2.0) / 1e6
    assert _budget(acme).spend_usd == pytest.approx(fallback_cost)
    acme.feedback(decision_id=decision.decision_id, model=GPT35, cost_usd=0.5)
    assert _budget(acme).spend_usd == pytest.approx(fallback_cost)
    assert _budget(acme).period == "hour"


def test_target_per_request_raises_the_pacing_multiplier(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With target_usd_per_request = 0.001 the pacing multiplier starts at 0, rises above 0
    once feedback reports requests costing more than the target, and makes the same expensive
    outcome earn a lower reward than before; cheap requests bring it back down."""
    service = start_service(_config({"target_usd_per_request": TARGET_USD}))
    acme = api(service, ACME_KEY)
    assert _budget(acme).pacing_multiplier == 0.0
    assert _budget(acme).target_usd_per_request == TARGET_USD
    rewards = []
    for _ in range(3):
        decision = acme.route()
        ack = acme.feedback(decision_id=decision.decision_id, quality=1.0, cost_usd=COST_USD)
        rewards.append(ack.reward)
    high = _budget(acme).pacing_multiplier
    assert high > 0.0
    assert rewards[0] > rewards[1] > rewards[2]
    for _ in range(3):
        decision = acme.route()
        acme.feedback(decision_id=decision.decision_id, quality=1.0, cost_usd=0.0)
    assert _budget(acme).pacing_multiplier < high
    assert _budget(acme).mean_cost_usd == pytest.approx(COST_USD / 2)


@pytest.mark.parametrize(
    ("budget", "text"),
    [
        ({"limit_usd": -1.0}, "limit_usd"),
        ({"limit_usd": 0}, "limit_usd"),
        ({"target_usd_per_request": "cheap"}, "target_usd_per_request"),
        ({"period": "week"}, "period"),
        ({"cap": 5.0}, "unknown key"),
    ],
)
def test_invalid_budget_is_a_config_error(budget: dict[str, Any], text: str) -> None:
    """A non-positive or non-numeric limit or target, an unknown period or an unknown key in
    a tenant's budget is a ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(_config(budget))
    assert text in caught.value.message


def test_a_restart_keeps_the_period_spend_and_the_hard_cap(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Any
) -> None:
    """Spend reported before a restart still counts after it: the restarted service reads the
    period's spend back from its log, so the hard cap still refuses routes and GetStats shows
    the same spend."""
    config = _config({"period": "day", "limit_usd": LIMIT_USD})
    config["log"] = {"path": str(tmp_path / "budget-restart.duckdb")}
    first = start_service(config)
    acme = api(first, ACME_KEY)
    for _ in range(3):
        decision = acme.route()
        acme.feedback(decision_id=decision.decision_id, quality=1.0, cost_usd=COST_USD)
    first.stop()
    second = start_service(config)
    acme = api(second, ACME_KEY)
    assert _budget(acme).spend_usd == pytest.approx(3 * COST_USD)
    details = acme.fails("Route", pb.RouteRequest(prompt="hi"), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert details.startswith("budget")
