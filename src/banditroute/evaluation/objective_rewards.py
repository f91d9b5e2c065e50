"""Re-score logged reward fragments under an objective, vectorised.

The log keeps each outcome's fragments (quality, cost, latency, status), so replay can ask
what a decision was worth under *another* trade-off than the one it was made under. The
formula is :meth:`banditroute.objectives.Objective.reward` applied to arrays::

    reward = quality_w * q - cost_w * cost_usd - latency_w * latency_ms - failure (if not OK)

with ``q`` the reported quality when the call succeeded (1 when unscored) and 0 when it
failed; a missing cost or latency contributes nothing. A budget's pacing surcharge depends on
the live pacer's state and is not replayed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from banditroute.config import RewardSettings, Settings
from banditroute.evaluation.logdata import ReplayLog
from banditroute.objectives import Objective, parse_objective

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FragmentArrays:
    """The outcome fragments as the objective reads them, ``(n,)`` each.

    ``quality`` is the effective quality (unscored success = 1, failure = 0); ``cost_usd`` and
    ``latency_ms`` have 0 where unknown; ``failed`` is 1.0 where the status was not OK.
    """

    quality: FloatArray
    cost_usd: FloatArray
    latency_ms: FloatArray
    failed: FloatArray

    def matrix(self) -> FloatArray:
        """``(n, 3)``: quality, cost, latency (the targets of a multi-output reward model)."""
        return np.column_stack([self.quality, self.cost_usd, self.latency_ms])


FRAGMENT_NAMES: tuple[str, ...] = ("quality", "cost_usd", "latency_ms")


def fragment_arrays(
    quality: npt.ArrayLike, cost_usd: npt.ArrayLike, latency_ms: npt.ArrayLike, ok: npt.ArrayLike
) -> FragmentArrays:
    """Effective fragments from raw ones (NaN where unknown; ``ok``: the call succeeded)."""
    success = np.asarray(ok, dtype=np.bool_)
    q = np.asarray(quality, dtype=np.float64)
    return FragmentArrays(
        quality=np.where(success, np.where(np.isnan(q), 1.0, q), 0.0),
        cost_usd=np.nan_to_num(np.asarray(cost_usd, dtype=np.float64), nan=0.0),
        latency_ms=np.nan_to_num(np.asarray(latency_ms, dtype=np.float64), nan=0.0),
        failed=(~success).astype(np.float64),
    )


def fragments(log: ReplayLog) -> FragmentArrays:
    """Effective fragments of every decision (decisions without an outcome count as failed)."""
    return fragment_arrays(log.quality, log.cost_usd, log.latency_ms, log.ok & log.has_outcome)


def score(objective: Objective, parts: FragmentArrays) -> FloatArray:
    """The objective's reward of each outcome ``(n,)`` (no pacing surcharge)."""
    rewards: FloatArray = (
        objective.quality * parts.quality
        - objective.failure * parts.failed
        - objective.cost * parts.cost_usd
        - objective.latency * parts.latency_ms
    )
    return rewards


def log_rewards(
    log: ReplayLog, objective: Objective, *, default_reward: float | None = None
) -> FloatArray:
    """Rewards of the log's decisions under ``objective``.

    Decisions without an outcome get ``default_reward`` (when given) instead of a score.
    """
    rewards = score(objective, fragments(log))
    if default_reward is not None:
        rewards = np.where(log.has_outcome, rewards, default_reward)
    return rewards


def reward_range(
    objective: Objective, limits: RewardSettings, *, default_reward: float | None = None
) -> tuple[float, float]:
    """The lowest and highest reward ``objective`` can give an outcome the service accepts.

    Quality is in [0, 1] (an unscored success counts 1); cost and latency in [0,
    ``max_cost_usd``] and [0, ``max_latency_ms``] (Feedback refuses more); a failure scores
    quality 0 and pays the failure penalty. ``default_reward`` (decisions scored with it)
    widens the range to include it.
    """
    high = objective.quality
    low = (
        -objective.failure
        - objective.cost * limits.max_cost_usd
        - objective.latency * limits.max_latency_ms
    )
    if default_reward is not None:
        low, high = min(low, default_reward), max(high, default_reward)
    return float(low), float(high)


def fragment_ranges(limits: RewardSettings) -> tuple[tuple[float, float], ...]:
    """The range of each of :data:`FRAGMENT_NAMES` (quality, cost, latency) as Feedback
    accepts them."""
    return ((0.0, 1.0), (0.0, limits.max_cost_usd), (0.0, limits.max_latency_ms))


def resolve_objective(
    text: str | None, settings: Settings, *, arg: str = "--objective"
) -> Objective:
    """A profile name or inline weights (``quality=1,cost=0``); the default profile if None.

    Raises :class:`~banditroute.errors.ConfigError` naming ``arg`` when it is not valid.
    """
    if text is None or not text.strip():
        return settings.objective("")
    return parse_objective(text, settings.objectives, arg=arg)


def describe_objective(objective: Objective) -> dict[str, object]:
    """The objective's name and weights, for reports."""
    return {
        "name": objective.name,
        "quality": objective.quality,
        "cost": objective.cost,
        "latency": objective.latency,
        "failure": objective.failure,
        "budget_usd": objective.budget_usd,
    }


__all__ = [
    "FRAGMENT_NAMES",
    "FragmentArrays",
    "describe_objective",
    "fragment_arrays",
    "fragment_ranges",
    "fragments",
    "log_rewards",
    "resolve_objective",
    "reward_range",
    "score",
]
