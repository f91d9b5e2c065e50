"""Objectives: the reward formula, failures, missing fragments, parsing and budget pacing."""

from __future__ import annotations

import math

import pytest

from banditroute.config import Settings
from banditroute.errors import ConfigError, InvalidArgument
from banditroute.objectives import (
    PACING_AIM,
    SPEND_INCENTIVE,
    BudgetPacer,
    Objective,
    parse_objective,
)
from banditroute.outcomes import Fragments, OutcomeStatus

OBJECTIVE = Objective("test", quality=2.0, cost=100.0, latency=0.001, failure=0.25)


def test_reward_formula() -> None:
    """reward = q_w * quality - c_w * cost - l_w * latency for a successful call."""
    fragments = Fragments(quality=0.8, cost_usd=0.002, latency_ms=1500.0)
    expected = 2.0 * 0.8 - 100.0 * 0.002 - 0.001 * 1500.0
    assert OBJECTIVE.reward(fragments) == pytest.approx(expected)


def test_extra_cost_weight_adds_to_the_cost_weight() -> None:
    """A pacing surcharge prices each dollar higher, and changes nothing when cost is unknown."""
    fragments = Fragments(quality=1.0, cost_usd=0.01, latency_ms=None)
    base = OBJECTIVE.reward(fragments)
    assert OBJECTIVE.reward(fragments, extra_cost_weight=40.0) == pytest.approx(base - 0.4)
    no_cost = Fragments(quality=1.0, cost_usd=None, latency_ms=None)
    assert OBJECTIVE.reward(no_cost, extra_cost_weight=40.0) == OBJECTIVE.reward(no_cost)


@pytest.mark.parametrize(
    "status",
    [OutcomeStatus.ERROR, OutcomeStatus.TIMEOUT, OutcomeStatus.RATE_LIMITED, OutcomeStatus.REFUSED],
)
def test_failure_scores_zero_quality_and_pays_the_penalty(status: OutcomeStatus) -> None:
    """A failed call counts quality 0 (whatever was reported) and subtracts the failure penalty."""
    fragments = Fragments(quality=0.9, cost_usd=0.001, latency_ms=200.0, status=status)
    expected = -0.25 - 100.0 * 0.001 - 0.001 * 200.0
    assert OBJECTIVE.reward(fragments) == pytest.approx(expected)
    assert not fragments.ok


def test_missing_quality_counts_as_one_when_ok_and_zero_on_failure() -> None:
    """An unscored successful call is worth full quality; an unscored failure is worth none."""
    ok = Fragments(quality=None, cost_usd=None, latency_ms=None)
    failed = Fragments(quality=None, cost_usd=None, latency_ms=None, status=OutcomeStatus.ERROR)
    assert OBJECTIVE.reward(ok) == pytest.approx(2.0)
    assert OBJECTIVE.reward(failed) == pytest.approx(-0.25)


def test_missing_cost_and_latency_contribute_nothing() -> None:
    """Unknown cost and latency leave the quality term alone."""
    fragments = Fragments(quality=0.5, cost_usd=None, latency_ms=None)
    assert OBJECTIVE.reward(fragments) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"quality": 1.5}, "quality"),
        ({"quality": -0.1}, "quality"),
        ({"quality": math.nan}, "quality"),
        ({"cost_usd": -0.01}, "cost_usd"),
        ({"cost_usd": math.inf}, "cost_usd"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"latency_ms": math.nan}, "latency_ms"),
    ],
)
def test_invalid_fragments_are_rejected(kwargs: dict[str, float], field: str) -> None:
    """Out-of-range or non-finite fragments raise InvalidArgument naming the field."""
    values: dict[str, float | None] = {"quality": 0.5, "cost_usd": 0.0, "latency_ms": 0.0}
    values.update(kwargs)
    with pytest.raises(InvalidArgument) as info:
        Fragments(**values)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    "kwargs",
    [{"cost": -1.0}, {"latency": math.inf}, {"quality": math.nan}, {"budget_usd": 0.0}],
)
def test_invalid_weights_are_rejected(kwargs: dict[str, float]) -> None:
    """Negative or non-finite weights and a non-positive budget raise ValueError."""
    with pytest.raises(ValueError, match="must be"):
        Objective("bad", **kwargs)  # type: ignore[arg-type]


def test_parse_objective_accepts_a_profile_name(default_settings: Settings) -> None:
    """A bare name returns that profile."""
    profiles = default_settings.objectives
    assert parse_objective(" economy ", profiles) is profiles["economy"]


def test_parse_objective_accepts_inline_weights(default_settings: Settings) -> None:
    """Inline KEY=NUMBER weights build an objective; left-out keys keep the balanced defaults."""
    objective = parse_objective("quality=2, cost=10,budget=0.003", default_settings.objectives)
    balanced = default_settings.objectives["balanced"]
    assert objective.quality == 2.0
    assert objective.cost == 10.0
    assert objective.budget_usd == 0.003
    assert objective.latency == balanced.latency
    assert objective.failure == balanced.failure


@pytest.mark.parametrize(
    "text",
    [
        "nosuchprofile",
        "quality=abc",
        "speed=1",
        "quality=1,,cost=2",
        "cost=-5",
        "cost=1,quality",
        "",
    ],
)
def test_parse_objective_rejects_bad_input_naming_the_argument(
    text: str, default_settings: Settings
) -> None:
    """Unknown profiles, unknown keys, non-numbers and invalid weights name --objective."""
    with pytest.raises(ConfigError, match="--objective") as info:
        parse_objective(text, default_settings.objectives)
    assert info.value.field == "--objective"


def test_parse_objective_names_a_custom_argument(default_settings: Settings) -> None:
    """The argument name in errors can be changed (for other CLI flags)."""
    with pytest.raises(ConfigError, match="--baseline"):
        parse_objective("bogus=1", default_settings.objectives, arg="--baseline")


def test_budget_pacer_raises_lambda_when_overspending_and_falls_to_its_floor() -> None:
    """Spending above the budget raises the multiplier; spending below brings it down to its
    small negative floor (a spend incentive of SPEND_INCENTIVE quality units per budget)."""
    pacer = BudgetPacer(budget_usd=0.001, rate=0.05)
    previous = pacer.lam
    for _ in range(20):
        pacer.observe(0.003)
        assert pacer.lam > previous
        previous = pacer.lam
    assert pacer.mean_cost_usd == pytest.approx(0.003)
    for _ in range(200):
        pacer.observe(0.0002)
    assert pacer.lam == pytest.approx(-SPEND_INCENTIVE * pacer.scale)
    assert pacer.requests == 220


def test_budget_pacer_step_is_scale_free() -> None:
    """The same relative overspend moves lam by the same number of quality units per budget."""
    small = BudgetPacer(budget_usd=0.001)
    large = BudgetPacer(budget_usd=1.0)
    small.observe(0.002)
    large.observe(2.0)
    assert small.lam * small.budget_usd == pytest.approx(large.lam * large.budget_usd)
    assert small.lam == pytest.approx(0.05 * (1 / 0.001) * (2.0 - PACING_AIM))


def test_budget_pacer_lambda_is_capped() -> None:
    """A huge overspend cannot push lam beyond 100 quality units per budget."""
    pacer = BudgetPacer(budget_usd=0.001, rate=10.0)
    for _ in range(100):
        pacer.observe(10.0)
    assert pacer.lam == pytest.approx(100.0 * pacer.scale)


def test_budget_pacer_rejects_a_non_positive_budget() -> None:
    """A pacer needs a positive budget."""
    with pytest.raises(ValueError, match="budget"):
        BudgetPacer(budget_usd=0.0)
