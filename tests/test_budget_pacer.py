"""The budget pacer's control law against stylised routers: a router that picks a dear model
while the price is below a threshold and a cheap one above it. Fixed, deterministic streams."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from banditroute.objectives import MAX_CREDIT, PACING_AIM, SPEND_INCENTIVE, BudgetPacer

BUDGET = 0.001


def _stream(pacer: BudgetPacer, cost_at: Callable[[float], float], requests: int) -> list[float]:
    """Route ``requests`` requests, each costing ``cost_at(multiplier in quality units per
    budget)``; returns the cumulative mean cost over the budget after each request."""
    spent, ratios = 0.0, []
    for n in range(1, requests + 1):
        cost = cost_at(pacer.lam / pacer.scale)
        pacer.observe(cost)
        spent += cost
        ratios.append(spent / n / BUDGET)
    return ratios


def _after(
    requests: int, budgets: float, then: Callable[[float], float]
) -> Callable[[float], float]:
    """``budgets`` budgets for each of the first ``requests`` requests, whatever the price,
    then ``then``."""
    seen = itertools.count()
    return lambda units: budgets * BUDGET if next(seen) < requests else then(units)


def _threshold_router(threshold: float, dear: float, cheap: float) -> Callable[[float], float]:
    """Dear (``dear`` budgets) while the multiplier is below ``threshold``, else cheap."""
    return lambda units: dear * BUDGET if units < threshold else cheap * BUDGET


def test_a_standing_price_leaves_no_standing_overspend() -> None:
    """Where the budget binds only at a price of 0.05 quality units per budget (a dear model 4x
    the budget is worth that much more), the stream ends within 2% of the budget after 600
    requests and stays there, whatever the horizon. The old dual ascent held that price only by
    owing price / rate budgets: 600 requests ended 4% over."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    ratios = _stream(pacer, _threshold_router(0.05, dear=4.0, cheap=0.5), 3000)
    assert all(0.98 <= r <= 1.02 for r in ratios[599:])
    assert pacer.lam / pacer.scale > 0.04  # it holds the price the budget needs


def test_early_overspend_is_worked_off() -> None:
    """Thirty requests at 4x the budget (a cold start trying the dearest model) are repaid:
    the stream is within [0.95, 1.02] of the budget by request 600."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    router = _threshold_router(0.02, dear=3.0, cheap=0.3)
    assert 0.95 <= _stream(pacer, _after(30, 4.0, router), 600)[-1] <= 1.02


def test_a_near_tie_is_bought_when_spend_runs_under_budget() -> None:
    """A router that takes the dearer model only when it is worth a little more (a price
    below -0.004 quality units per budget: the models are within its estimates' noise) gets
    there, and the stream ends within [0.95, 1.02] of the budget. The old pacer stopped at 0
    and spent half the budget."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    ratios = _stream(pacer, _threshold_router(-0.004, dear=3.0, cheap=0.5), 1000)
    assert 0.95 <= ratios[-1] <= 1.02


def test_a_clear_loser_is_not_bought_to_spend_the_budget() -> None:
    """Where the dearer model is clearly worse (it would take a price of -0.2 quality units per
    budget to choose it), the pacer does not force the spend: cost stays at the cheap
    model's and the multiplier rests at its small floor, -SPEND_INCENTIVE."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    ratios = _stream(pacer, _threshold_router(-0.2, dear=3.0, cheap=0.5), 1000)
    assert ratios[-1] == pytest.approx(0.5)
    assert pacer.lam / pacer.scale == pytest.approx(-SPEND_INCENTIVE)


def test_starting_multiplier_is_kept_until_spend_moves_it() -> None:
    """A multiplier set from outside (a warm start's estimate) is where the pacer starts, owing
    nothing: a request at exactly the spend it aims at leaves it unchanged."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    pacer.lam = 0.03 * pacer.scale
    pacer.observe(PACING_AIM * BUDGET)
    assert pacer.lam / pacer.scale == 0.03


def test_an_early_underspend_is_spent_once_spending_buys_quality() -> None:
    """A cold start that sends its first 100 requests to the cheap model (it cannot yet tell
    the dear one is better) and then wants the dear one spends what it saved: the stream ends
    within [0.95, 1.02] of the budget. Before, every request at the multiplier's floor forgot
    the underspend and the stream ended at 0.89 (0.90 with the plain dual ascent)."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    router = _threshold_router(0.02, dear=3.0, cheap=0.3)
    assert 0.95 <= _stream(pacer, _after(100, 0.3, router), 600)[-1] <= 1.02


def test_credit_is_bounded() -> None:
    """After a long stretch where spending buys nothing, at most MAX_CREDIT budgets of
    underspend are remembered: a later change of mind cannot spend months of savings at once."""
    pacer = BudgetPacer(BUDGET, rate=0.002)
    for _ in range(10_000):
        pacer.observe(0.1 * BUDGET)
    assert pacer.debt == pytest.approx(-MAX_CREDIT)
