"""Budgets across serving processes: each process hands the others the spend it recorded, so
a tenant's hard cap holds for the whole server, and totals add up own figures only."""

from __future__ import annotations

from typing import Any

import pytest

from banditroute.budgets import TenantBudget
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import ResourceExhausted
from banditroute.objectives import PACING_AIM
from banditroute.tenancy import BudgetSettings, hash_key

T0 = 1_700_000_000.0
DAY = 86_400.0


def _budget(limit: float | None = 1.0) -> TenantBudget:
    return TenantBudget("acme", BudgetSettings(period="day", limit_usd=limit))


def test_take_local_hands_over_own_spend_once() -> None:
    """take_local() returns the spend and requests recorded since the previous call (with the
    period they belong to) and starts again from zero; remote spend is not handed on."""
    budget = _budget()
    budget.record(0.25, T0)
    budget.record(0.05, T0, new_request=False)
    budget.add_remote(budget.status(T0).period_start, 0.5, 2, T0)
    start, spend, requests = budget.take_local(T0)
    assert (start, spend, requests) == (budget.status(T0).period_start, pytest.approx(0.3), 1)
    assert budget.take_local(T0)[1:] == (0.0, 0)


def test_remote_spend_counts_toward_the_cap_but_not_own_figures() -> None:
    """Spend another process recorded in this period brings the cap closer (and can reach
    it); the status' own figures stay this process's; spend of another period is dropped."""
    budget = _budget(limit=1.0)
    budget.record(0.4, T0)
    start = budget.status(T0).period_start
    budget.add_remote(start - DAY, 5.0, 50, T0)  # yesterday's: ignored
    budget.check(T0)
    budget.add_remote(start, 0.6, 3, T0)
    status = budget.status(T0)
    assert (status.spend_usd, status.requests) == (pytest.approx(1.0), 4)
    assert (status.own_spend_usd, status.own_requests) == (pytest.approx(0.4), 1)
    with pytest.raises(ResourceExhausted):
        budget.check(T0)


def test_two_routers_exchanging_spend_enforce_one_cap(make_router: Any, make_settings: Any) -> None:
    """Two routers (two serving processes) with a 0.01 USD cap: spend reported to the first
    reaches the second through take_budget_spend/add_budget_spend (a merge round), after
    which the second refuses the tenant's routes too."""
    settings = make_settings(
        {
            "tenants": [
                {"name": "acme", "api_key_sha256": [hash_key("k")],
                 "budget": {"period": "day", "limit_usd": 0.01}},
            ]
        }
    )  # fmt: skip
    first, _ = make_router(settings, id_prefix="a")
    second, _ = make_router(settings, id_prefix="b")
    for _ in range(3):
        decision = first.route(RouteQuery(prompt="hi", tenant="acme"))
        report = FeedbackReport(decision.decision_id, quality=1.0, cost_usd=0.004, tenant="acme")
        first.feedback(report)
    with pytest.raises(ResourceExhausted):
        first.route(RouteQuery(prompt="hi", tenant="acme"))
    second.route(RouteQuery(prompt="hi", tenant="acme"))  # not told yet
    second.add_budget_spend(first.take_budget_spend())
    with pytest.raises(ResourceExhausted):
        second.route(RouteQuery(prompt="hi", tenant="acme"))
    status = second.budget_status("acme")
    assert status is not None
    assert status.spend_usd == pytest.approx(0.012)
    assert status.own_spend_usd == 0.0
    assert first.take_budget_spend() == {}  # handed over once


def test_restored_spend_reaches_the_other_processes_in_the_first_round() -> None:
    """After a restart each process reads back only its own log's spend; the first take_local
    hands it over, so every process's cap counts the whole server's spend again."""
    first, second = _budget(limit=1.0), _budget(limit=1.0)
    first.restore(0.7, 7, T0)
    second.restore(0.4, 4, T0)
    for me, peer in ((first, second), (second, first)):
        peer.add_remote(*me.take_local(T0), T0)
    for budget, own in ((first, 0.7), (second, 0.4)):
        status = budget.status(T0)
        assert (status.spend_usd, status.requests) == (pytest.approx(1.1), 11)
        assert status.own_spend_usd == pytest.approx(own)
        with pytest.raises(ResourceExhausted):
            budget.check(T0)
    assert first.take_local(T0)[1:] == second.take_local(T0)[1:] == (0.0, 0)


def test_hard_cap_is_reached_by_costs_that_add_up_to_it() -> None:
    """Ten $0.10 requests spend a $1 cap: the eleventh is refused (a float running sum of
    0.1 ten times is 0.9999999999999999, which let one more request through)."""
    budget = _budget(limit=1.0)
    for _ in range(10):
        budget.check(T0)
        budget.record(0.1, T0)
    with pytest.raises(ResourceExhausted, match="budget"):
        budget.check(T0)


def test_tenant_pacer_steps_at_the_tuned_pacing_rate() -> None:
    """A tenant's pacing target moves its multiplier at the rate tuned for objective budgets
    (DEFAULT_PACING_RATE): one request at 4x the target then raises the price of the next such
    request by about 0.024 quality points. It used BudgetPacer's old 0.05, a 0.6-point jump, the
    rate objectives dropped because the choice then flipped at every call."""
    target = 0.00125
    budget = TenantBudget("acme", BudgetSettings(period="day", target_usd_per_request=target))
    budget.record(4 * target, T0)
    assert budget.multiplier * 4 * target == pytest.approx(0.002 * (4 - PACING_AIM) * 4)
    assert budget.multiplier * 4 * target == pytest.approx(0.024, abs=0.0002)
