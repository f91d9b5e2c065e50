"""From a feedback report to what is learned: the report's reward fragments within plausible
bounds, several rewards of one decision combined by the configured rule, and the bound on
the reward a policy learns from."""

from __future__ import annotations

import math
from dataclasses import replace

from banditroute.catalog import ModelSpec
from banditroute.config import RewardSettings
from banditroute.decisions import FeedbackReport
from banditroute.errors import InvalidArgument
from banditroute.outcomes import Fragments

MAX_LEARNED_REWARD = 1000.0
"""Largest reward magnitude a policy learns from (quality is in [0, 1]; a $1 call under a cost
weight of 200 is -200)."""


def check_report(report: FeedbackReport, limits: RewardSettings) -> Fragments:
    """The report's own fragments (its cost as reported), each within a plausible range
    ([reward] max_*): an absurd figure would otherwise stand in spend, budgets and a model's
    latency. InvalidArgument naming the field. (A cluster replica checks feedback for another
    replica's decision with it, not knowing the served model.)"""
    bounds = (
        ("input_tokens", limits.max_tokens),
        ("output_tokens", limits.max_tokens),
        ("cost_usd", limits.max_cost_usd),
        ("latency_ms", limits.max_latency_ms),
    )
    for name, most in bounds:
        value = getattr(report, name)
        if value is not None and not 0 <= value <= most:
            raise InvalidArgument(f"{name}: must be in [0, {most:g}], got {value}", field=name)
    return Fragments(report.quality, report.cost_usd, report.latency_ms, report.status)


def fragments(report: FeedbackReport, served: ModelSpec, limits: RewardSettings) -> Fragments:
    """:func:`check_report`'s fragments; without a reported cost, the served model's prices
    turn the reported tokens into one."""
    checked = check_report(report, limits)
    if checked.cost_usd is None and (
        report.input_tokens is not None or report.output_tokens is not None
    ):
        cost = served.price(report.input_tokens or 0, report.output_tokens or 0)
        return replace(checked, cost_usd=cost)
    return checked


def combine(rule: str, rewards: list[float]) -> float:
    """Combine several feedback rewards for one decision by the configured rule."""
    if rule == "first":
        return rewards[0]
    if rule == "last":
        return rewards[-1]
    if rule == "min":
        return min(rewards)
    if rule == "max":
        return max(rewards)
    if rule == "sum":
        return float(sum(rewards))
    return float(sum(rewards) / len(rewards))


def learnable(reward: float) -> float | None:
    """The reward as a policy learns it: clipped to +-MAX_LEARNED_REWARD (one absurd report,
    cost_usd = 1e300 is finite so valid, would otherwise overflow VW's weights to NaN and
    fail every later Route); None for a NaN reward, which is not learned at all."""
    if abs(reward) <= MAX_LEARNED_REWARD:
        return reward
    if math.isnan(reward):
        return None
    return math.copysign(MAX_LEARNED_REWARD, reward)


__all__ = ["MAX_LEARNED_REWARD", "combine", "fragments", "learnable"]
