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


@dataclass
class BudgetPacer:
    """Keeps mean cost per request at a target by pricing cost higher while spend runs over.

    A Lagrange multiplier ``lam`` (extra reward points per USD) follows projected dual ascent on
    the relative overspend of each observed request: ``lam <- max(0, lam + rate * scale *
    (cost - budget) / budget)``. ``scale`` is the multiplier's natural unit, the quality
    weight over the budget (the price at which spending the whole budget costs one unit of
    quality), so the same rate suits budgets of any size.
    """

    budget_usd: float
    rate: float = 0.05
    quality_weight: float = 1.0
    lam: float = 0.0
    spent_usd: float = 0.0
    requests: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.budget_usd) and self.budget_usd > 0):
            raise ValueError("budget_usd must be positive")

    @property
    def scale(self) -> float:
        """Reward points per USD at which the whole budget is worth one quality unit."""
        return self.quality_weight / self.budget_usd

    def observe(self, cost_usd: float) -> None:
        """Account one served request's cost and move the multiplier."""
        self.spent_usd += cost_usd
        self.requests += 1
        step = self.rate * self.scale * (cost_usd - self.budget_usd) / self.budget_usd
        self.lam = min(max(0.0, self.lam + step), 100.0 * self.scale)

    @property
    def mean_cost_usd(self) -> float:
        """Mean realised cost per request so far."""
        return self.spent_usd / self.requests if self.requests else 0.0
