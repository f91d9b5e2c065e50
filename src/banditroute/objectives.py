"""Objectives: how reward fragments become one scalar reward, and online budget pacing.

reward = quality_weight * quality - cost_weight * cost_usd - latency_weight * latency_ms
         - failure_penalty (only when the status is not OK; quality then counts as 0)

A missing quality counts as 1 when the call succeeded (it worked, nobody scored it) and 0
otherwise; missing cost or latency contribute nothing. Weights are per USD and per millisecond,
so ``cost=50`` makes a $0.005 call (GPT-4 on a RouterBench prompt) worth 0.25 quality points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from banditroute.errors import ConfigError
from banditroute.outcomes import Fragments

_WEIGHT_KEYS = {"quality", "cost", "latency", "failure", "budget", "pacing_rate"}
DEFAULT_PACING_RATE = 0.002
"""Default step of an objective's budget pacer (see :class:`BudgetPacer`). Tuned by replay on
RouterBench at a budget of 25% of GPT-4's cost: one GPT-4 call (4x the budget) then raises the
price of the next GPT-4 call by 0.024 quality points (0.6 with a rate of 0.05, which made the
choice flip at every call), and the multiplier still settles within about a hundred requests."""


@dataclass(frozen=True)
class Objective:
    """A named weight profile: what one unit of quality, dollar and millisecond is worth.

    ``budget_usd`` (optional) is a target mean cost per request that a :class:`BudgetPacer`
    enforces by raising the effective cost weight while spend runs above it.
    """

    name: str
    quality: float = 1.0
    cost: float = 50.0
    latency: float = 0.0001
    failure: float = 0.5
    budget_usd: float | None = None
    pacing_rate: float = DEFAULT_PACING_RATE

    def __post_init__(self) -> None:
        for key in ("quality", "cost", "latency", "failure", "pacing_rate"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
        if self.budget_usd is not None and not (
            math.isfinite(self.budget_usd) and self.budget_usd > 0
        ):
            raise ValueError(f"budget must be a positive number, got {self.budget_usd!r}")

    @classmethod
    def from_mapping(cls, name: str, entry: Mapping[str, Any]) -> Objective:
        """Build from a config table or parsed inline weights; rejects unknown keys."""
        unknown = set(entry) - _WEIGHT_KEYS
        if unknown:
            raise ValueError(f"unknown weight(s) {', '.join(sorted(unknown))}")
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key}: expected a number, got {value!r}")
        values = {("budget_usd" if k == "budget" else k): float(v) for k, v in entry.items()}
        return cls(name=name, **values)

    def reward(self, fragments: Fragments, *, extra_cost_weight: float = 0.0) -> float:
        """The scalar reward of an outcome under this objective (plus a pacing surcharge)."""
        if fragments.ok:
            quality = 1.0 if fragments.quality is None else fragments.quality
            penalty = 0.0
        else:
            quality = 0.0
            penalty = self.failure
        value = self.quality * quality - penalty
        if fragments.cost_usd is not None:
            value -= (self.cost + extra_cost_weight) * fragments.cost_usd
        if fragments.latency_ms is not None:
            value -= self.latency * fragments.latency_ms
        return value

    def with_budget(self, budget_usd: float | None) -> Objective:
        """A copy with another per-request budget."""
        return replace(self, budget_usd=budget_usd)


def parse_objective(
    text: str, profiles: Mapping[str, Objective], *, arg: str = "--objective"
) -> Objective:
    """A profile name, or inline weights such as ``quality=1,cost=50,latency=0.0001``.

    Inline weights start from the default ``balanced`` weights for keys they leave out.
    """
    text = text.strip()
    if "=" not in text:
        if text in profiles:
            return profiles[text]
        raise ConfigError(
            f"{arg}: unknown profile {text!r} (known: {', '.join(sorted(profiles))})", field=arg
        )
    entry: dict[str, float] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in _WEIGHT_KEYS:
            raise ConfigError(
                f"{arg}: expected KEY=NUMBER with KEY in {', '.join(sorted(_WEIGHT_KEYS))}, "
                f"got {part!r}",
                field=arg,
            )
        try:
            entry[key] = float(raw)
        except ValueError:
            raise ConfigError(f"{arg}: {key}={raw!r} is not a number", field=arg) from None
    try:
        return Objective.from_mapping(text, entry)
    except ValueError as exc:
        raise ConfigError(f"{arg}: {exc}", field=arg) from exc


PACING_HORIZON = 100.0
"""Requests over which a pacer works off its debt (:class:`BudgetPacer`): its price also
integrates the debt at ``rate / PACING_HORIZON`` per request."""
PACING_AIM = 0.99
"""Share of the budget a :class:`BudgetPacer` steers the mean cost to: 1% of headroom for calls
whose cost the catalogue cannot foresee (a long answer from the dearest model), which a short
stream cannot repay before it ends. The budget's tolerance is asymmetric (at most 2% over, 5%
under is still spending it); aiming at 1.0 left 4 of 5 seeds 2-3% over on ParetoBandit's
tuning part at 10%, warm, and 0.985 cost quality cold."""
SPEND_INCENTIVE = 0.02
"""Most negative multiplier of a :class:`BudgetPacer`, in quality units per budget: while spend
runs under the budget, a dearer model may be worth up to this much more per budget it costs,
which tips near-ties towards it and no clear loser (0.01 left cold seeds at 0.88-0.94 of the
budget on the tuning part at 35%)."""
MAX_CREDIT = 100.0
"""Most underspend, in budgets, a :class:`BudgetPacer` remembers: a cold start that spends
little while it cannot yet tell the models apart spends it once it can, instead of ending
under budget; what lies beyond (a long stretch where spending buys nothing) is forgotten, so
it never pays for a later burst."""
MAX_INTEGRATED_DEBT = 20.0
"""Largest debt, in budgets, the integral of a :class:`BudgetPacer` takes in per request: a
large early overspend (a cold start trying the dearest model) is repaid by the proportional
term without winding the price far above what the budget needs (and underspending after)."""
MAX_MULTIPLIER = 100.0
"""Largest multiplier of a :class:`BudgetPacer`, in quality units per budget."""


@dataclass
class BudgetPacer:
    """Keeps mean cost per request at a target by pricing cost higher while spend runs over.

    A proportional-integral controller of the debt ``D``, the cumulative spend over
    ``PACING_AIM`` of the budget, in budgets. The multiplier (extra reward points per USD) is
    ``scale * (price + rate * D)``: the proportional term answers each request at once (one
    request at 4x the budget raises the next one's price by about ``3 * rate``), and ``price``,
    which integrates ``rate / PACING_HORIZON * D`` per request, learns the price at which spend
    meets the budget. A plain dual ascent (the multiplier proportional to ``D``) needs a
    standing debt to hold any price, so a stream ended ``price / (rate * requests)`` over the
    budget (cold on RouterBench at 10%: up to 4% over after 800 requests); the integral works
    that debt off over a few ``PACING_HORIZON`` requests, with no horizon to know. The
    multiplier stays within ``[-SPEND_INCENTIVE, MAX_MULTIPLIER]`` quality units per budget;
    the price does not integrate while the multiplier sits at its floor, and the debt keeps at
    most ``MAX_CREDIT`` budgets of underspend (no wind-up either way). ``scale`` is the
    multiplier's natural unit, the quality weight over the budget (the price at which spending
    the whole budget costs one unit of quality), so the same rate suits budgets of any size.
    """

    budget_usd: float
    rate: float = 0.05
    quality_weight: float = 1.0
    price: float = 0.0
    """The integral term, in quality units per budget."""
    debt_usd: float = 0.0
    """Cumulative spend over the budget (negative: under it), after back-calculation."""
    spent_usd: float = 0.0
    requests: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_usd) and self.budget_usd > 0):
            raise ValueError("budget_usd must be positive")

    @property
    def scale(self) -> float:
        """Reward points per USD at which the whole budget is worth one quality unit."""
        return self.quality_weight / self.budget_usd

    @property
    def debt(self) -> float:
        """The debt in budgets (requests' worth of the target)."""
        return self.debt_usd / self.budget_usd

    @property
    def lam(self) -> float:
        """The multiplier: extra reward points per USD of cost."""
        units = min(max(self.price + self.rate * self.debt, -SPEND_INCENTIVE), MAX_MULTIPLIER)
        return self.scale * units

    @lam.setter
    def lam(self, value: float) -> None:
        """Start from a known multiplier (e.g. estimated from a warm-start log), owing nothing."""
        self.debt_usd = 0.0
        self.price = value / self.scale

    def observe(self, cost_usd: float) -> None:
        """Account one served request's cost and move the multiplier."""
        self.spent_usd += cost_usd
        self.requests += 1
        debt = min(max(self.debt, -MAX_INTEGRATED_DEBT), MAX_INTEGRATED_DEBT)
        if debt > 0 or self.price + self.rate * self.debt > -SPEND_INCENTIVE:
            self.price += self.rate / PACING_HORIZON * debt
        self.price = min(max(self.price, -SPEND_INCENTIVE), MAX_MULTIPLIER)
        self.debt_usd += cost_usd - PACING_AIM * self.budget_usd
        raw = self.price + self.rate * self.debt
        if raw > MAX_MULTIPLIER and self.rate > 0:
            self.debt_usd = (MAX_MULTIPLIER - self.price) / self.rate * self.budget_usd
        elif self.debt < -MAX_CREDIT:
            self.debt_usd = -MAX_CREDIT * self.budget_usd

    @property
    def mean_cost_usd(self) -> float:
        """Mean realised cost per request so far."""
        return self.spent_usd / self.requests if self.requests else 0.0
