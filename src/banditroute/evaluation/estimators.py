r"""Off-policy estimators of a candidate routing policy's value from logged decisions.

Notation, for logged decision ``i`` (``n`` decisions, ``K`` models): ``a_i`` the logged
action, ``r_i`` its reward, ``p_i`` its logging propensity, ``π(·|x_i)`` the candidate
(``target``, ``(n, K)``), ``q̂(x_i, ·)`` a reward model (``reward_model``, ``(n, K)``) and::

    w_i   = π(a_i|x_i) / p_i                       importance weight
    dm_i  = Σ_a π(a|x_i) q̂(x_i, a)                 direct-method term
    δ_i   = r_i - q̂(x_i, a_i)                      residual of the logged reward

=========  ============================================================  ==================
estimator  value                                                         needs reward model
=========  ============================================================  ==================
IPS        mean(min(w, clip) · r)                                        no
SNIPS      Σ w r / Σ w                                                   no
DM         mean(dm)                                                      yes
DR         mean(dm + min(w, clip) · δ)                                   yes
SNDR       mean(dm) + Σ w δ / Σ w                                        yes
SwitchDR   mean(dm + 1[w <= tau] · w · δ)                                yes
=========  ============================================================  ==================

``clip`` (default ``inf``: none) caps importance weights (clipped IPS / DR with weight
clipping); ``SwitchDR`` drops the correction term where the weight exceeds ``tau``, so
``tau=inf`` is DR and ``tau=0`` is DM (the formulation of the Open Bandit Pipeline).

Every estimator is a frozen dataclass whose fields are its hyperparameters, with one interface:

* ``per_sample(data, target, reward_model)`` — ``(n,)`` values whose mean is the estimate;
  self-normalised estimators return ``dm_i + w_i · (…) / mean(w)``.
* ``estimate(data, target, reward_model)`` — the point estimate.
* ``interval(data, target, reward_model, *, method, level, n_boot, seed)`` — an
  :class:`~banditroute.evaluation.intervals.Interval`. ``"bootstrap"`` resamples decisions and
  recomputes the whole estimate, self-normalisation included, in each resample; ``"normal"``
  and ``"bernstein"`` use the linearised (delta-method) per-sample values, which for the
  self-normalised estimators are ``dm_i + R + w_i (y_i - R) / mean(w)`` (``y_i`` = ``r_i`` or
  ``δ_i``, ``R`` the ratio), and equal ``per_sample`` for the others.

:func:`evaluate` computes intervals for several estimators at once, validating the inputs and
drawing the bootstrap resamples once (so at a given integer seed it returns what each
estimator's ``interval`` would, up to float rounding, in about half the time of separate calls).
:func:`diagnostics` summarises the importance weights.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from banditroute.choices import DEFAULT_N_BOOT
from banditroute.evaluation.intervals import (
    Interval,
    Seed,
    bernstein_interval,
    check_level,
    check_method,
    check_n_boot,
    make_rng,
    normal_interval,
    percentile_interval,
    resample_sums,
)
from banditroute.evaluation.logged import FloatArray, LoggedData


class _Inputs:
    """Validated inputs and the per-decision quantities estimators share, each computed once."""

    def __init__(self, data: LoggedData, target: npt.ArrayLike, reward_model: object) -> None:
        self.data = data
        self.target = data.validate_target(target)
        self._reward_model = (
            None if reward_model is None else data.validate_reward_model(reward_model)
        )
        self.rows = np.arange(data.n)

    def reward_model(self, estimator: str) -> FloatArray:
        """The validated reward model, or ``ValueError`` when ``estimator`` lacks one."""
        if self._reward_model is None:
            raise ValueError(f"reward_model: {estimator} needs a reward model matrix (n, K)")
        return self._reward_model

    @cached_property
    def weights(self) -> FloatArray:
        """``w_i = π(a_i|x_i) / p_i``."""
        weights: FloatArray = self.target[self.rows, self.data.actions] / self.data.propensities
        return weights

    def direct(self, estimator: str) -> FloatArray:
        """``dm_i = Σ_a π(a|x_i) q̂(x_i, a)``."""
        self.reward_model(estimator)
        return self._direct

    def residuals(self, estimator: str) -> FloatArray:
        """``δ_i = r_i - q̂(x_i, a_i)``."""
        self.reward_model(estimator)
        return self._residuals

    @cached_property
    def _direct(self) -> FloatArray:
        direct: FloatArray = np.einsum("ij,ij->i", self.target, self.reward_model("direct"))
        return direct

    @cached_property
    def _residuals(self) -> FloatArray:
        logged = self.reward_model("residuals")[self.rows, self.data.actions]
        residuals: FloatArray = self.data.rewards - logged
        return residuals


@dataclass(frozen=True)
class _Parts:
    """An estimate as ``mean(base) + Σ num / Σ den`` (a missing part contributes nothing).

    Plain estimators only have ``base``; self-normalised ones add the ratio ``num / den``,
    which the bootstrap recomputes in every resample.
    """

    base: FloatArray | None
    num: FloatArray | None = None
    den: FloatArray | None = None

    def ratio(self, name: str) -> float:
        if self.num is None or self.den is None:
            return 0.0
        den = float(self.den.sum())
        if den == 0.0:
            raise ValueError(
                f"target: {name} is undefined, no logged action has positive target probability"
            )
        return float(self.num.sum()) / den

    def estimate(self, name: str) -> float:
        base = 0.0 if self.base is None else float(self.base.mean())
        return base + self.ratio(name)

    def per_sample(self, n: int, name: str) -> FloatArray:
        values = np.zeros(n) if self.base is None else self.base.copy()
        if self.num is not None and self.den is not None:
            self.ratio(name)  # raises when undefined
            values += self.num / self.den.mean()
        return values

    def linearised(self, n: int, name: str) -> FloatArray:
        values = np.zeros(n) if self.base is None else self.base.copy()
        if self.num is not None and self.den is not None:
            ratio = self.ratio(name)
            values += ratio + (self.num - ratio * self.den) / self.den.mean()
        return values

    def columns(self) -> list[FloatArray]:
        return [part for part in (self.base, self.num, self.den) if part is not None]

    def replicates(self, sums: list[FloatArray], n: int) -> FloatArray:
        """One estimate per resample from the resampled sums of :meth:`columns`, in order."""
        parts = iter(sums)
        values = np.zeros(sums[0].shape[0]) if self.base is None else next(parts) / n
        if self.num is not None and self.den is not None:
            num, den = next(parts), next(parts)
            with np.errstate(divide="ignore", invalid="ignore"):
                values = values + np.where(den != 0, num / den, np.nan)
        return values


def _check_hyper(name: str, value: float, *, positive: bool) -> None:
    numeric = isinstance(value, int | float | np.integer | np.floating)
    if isinstance(value, bool) or not numeric or math.isnan(value):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: must be > 0 (inf disables it), got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must be >= 0 (inf disables it), got {value!r}")


@dataclass(frozen=True)
class Estimator(ABC):
    """Shared interface; subclasses define :meth:`_parts` and their hyperparameter fields."""

    name: ClassVar[str]
    needs_reward_model: ClassVar[bool]

    @abstractmethod
    def _parts(self, inputs: _Inputs) -> _Parts:
        """The estimate's parts on validated inputs."""

    def per_sample(
        self, data: LoggedData, target: npt.ArrayLike, reward_model: object = None
    ) -> FloatArray:
        """``(n,)`` per-decision values whose mean is :meth:`estimate`."""
        return self._parts(_Inputs(data, target, reward_model)).per_sample(data.n, self.name)

    def estimate(
        self, data: LoggedData, target: npt.ArrayLike, reward_model: object = None
    ) -> float:
        """The estimated value of ``target`` (mean reward per decision)."""
        return self._parts(_Inputs(data, target, reward_model)).estimate(self.name)

    def interval(
        self,
        data: LoggedData,
        target: npt.ArrayLike,
        reward_model: object = None,
        *,
        method: str = "bootstrap",
        level: float = 0.95,
        n_boot: int = DEFAULT_N_BOOT,
        seed: Seed = None,
    ) -> Interval:
        """The estimate with a two-sided ``level`` confidence interval (see module docstring)."""
        (result,) = evaluate(
            [self], data, target, reward_model, method=method, level=level, n_boot=n_boot, seed=seed
        )
        return result


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring: ``mean(min(w, clip) · r)``; unbiased when ``clip=inf``."""

    name: ClassVar[str] = "ips"
    needs_reward_model: ClassVar[bool] = False
    clip: float = math.inf

    def __post_init__(self) -> None:
        _check_hyper("clip", self.clip, positive=True)

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = np.minimum(inputs.weights, self.clip)
        return _Parts(weights * inputs.data.rewards)


@dataclass(frozen=True)
class SNIPS(Estimator):
    """Self-normalised IPS: ``Σ w r / Σ w``; per sample ``w r / mean(w)``."""

    name: ClassVar[str] = "snips"
    needs_reward_model: ClassVar[bool] = False

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = inputs.weights
        return _Parts(None, weights * inputs.data.rewards, weights)


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: ``mean(Σ_a π(a|x) q̂(x, a))``; as good as the reward model."""

    name: ClassVar[str] = "dm"
    needs_reward_model: ClassVar[bool] = True

    def _parts(self, inputs: _Inputs) -> _Parts:
        return _Parts(inputs.direct(self.name))


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: ``mean(dm + min(w, clip) · (r - q̂(x, a)))``; ``clip`` < inf clips."""

    name: ClassVar[str] = "dr"
    needs_reward_model: ClassVar[bool] = True
    clip: float = math.inf

    def __post_init__(self) -> None:
        _check_hyper("clip", self.clip, positive=True)

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = np.minimum(inputs.weights, self.clip)
        return _Parts(inputs.direct(self.name) + weights * inputs.residuals(self.name))


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalised DR: ``mean(dm) + Σ w (r - q̂(x, a)) / Σ w``."""

    name: ClassVar[str] = "sndr"
    needs_reward_model: ClassVar[bool] = True

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = inputs.weights
        return _Parts(inputs.direct(self.name), weights * inputs.residuals(self.name), weights)


@dataclass(frozen=True)
class SwitchDR(Estimator):
    """Switch DR: ``mean(dm + 1[w <= tau] · w · (r - q̂(x, a)))``; inf is DR, 0 is DM."""

    name: ClassVar[str] = "switch-dr"
    needs_reward_model: ClassVar[bool] = True
    tau: float = math.inf

    def __post_init__(self) -> None:
        _check_hyper("tau", self.tau, positive=False)

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = inputs.weights
        kept = np.where(weights <= self.tau, weights, 0.0)
        return _Parts(inputs.direct(self.name) + kept * inputs.residuals(self.name))


def evaluate(
    estimators: Sequence[Estimator],
    data: LoggedData,
    target: npt.ArrayLike,
    reward_model: object = None,
    *,
    method: str = "bootstrap",
    level: float = 0.95,
    n_boot: int = DEFAULT_N_BOOT,
    seed: Seed = None,
) -> list[Interval]:
    """Intervals for several estimators of the same ``target``, in the order given.

    Inputs are validated once, and the bootstrap draws one set of resamples for all of them,
    so each result equals ``estimator.interval(...)`` at the same integer seed up to float
    rounding (the resampled sums are computed in one matrix product). With a ``Generator`` as
    seed, separate calls would consume different draws.
    """
    chosen = check_method(method)
    level = check_level(level)
    rng = None
    if chosen == "bootstrap":
        n_boot = check_n_boot(n_boot)
        rng = make_rng(seed)
    inputs = _Inputs(data, target, reward_model)
    named = [(estimator, estimator._parts(inputs)) for estimator in estimators]
    n = data.n
    if chosen != "bootstrap":
        if n < 2:
            raise ValueError(f"data: a {chosen} interval needs at least 2 decisions, got {n}")
        build = normal_interval if chosen == "normal" else bernstein_interval
        return [
            build(
                parts.linearised(n, estimator.name),
                level=level,
                estimate=parts.estimate(estimator.name),
            )
            for estimator, parts in named
        ]

    columns: list[FloatArray] = []
    slots: dict[int, int] = {}
    for _, parts in named:  # shared arrays (the weights) are resampled once
        for column in parts.columns():
            if id(column) not in slots:
                slots[id(column)] = len(columns)
                columns.append(column)
    estimates = [parts.estimate(estimator.name) for estimator, parts in named]
    sums = resample_sums(np.column_stack(columns), n_boot=n_boot, seed=rng)
    return [
        percentile_interval(
            estimate,
            parts.replicates([sums[:, slots[id(column)]] for column in parts.columns()], n),
            level=level,
        )
        for estimate, (_, parts) in zip(estimates, named, strict=True)
    ]


@dataclass(frozen=True)
class Diagnostics:
    """How well the log supports a candidate policy.

    ``ess`` — effective sample size ``(Σ w)² / Σ w²`` (``n`` when the candidate is the logging
    policy, small when a few decisions carry all the weight; 0 when every weight is 0).
    ``max_weight`` — the largest importance weight ``w_i``.
    ``unsupported_share`` — share of logged decisions whose logged action the candidate never
    picks (``π(a_i|x_i) = 0``): traffic the candidate would route elsewhere.
    ``uncovered_mass`` — mean candidate probability on actions the logging policy never took
    (``logging_probs == 0``), which no estimator but DM can see; None without ``logging_probs``.
    """

    ess: float
    max_weight: float
    unsupported_share: float
    uncovered_mass: float | None = None


def diagnostics(data: LoggedData, target: npt.ArrayLike) -> Diagnostics:
    """Importance-weight diagnostics of ``target`` on ``data`` (see :class:`Diagnostics`)."""
    inputs = _Inputs(data, target, None)
    weights = inputs.weights
    total = float(weights.sum())
    squares = float(np.dot(weights, weights))
    ess = total * total / squares if squares > 0 else 0.0
    target_logged = inputs.target[inputs.rows, data.actions]
    uncovered = None
    if data.logging_probs is not None:
        uncovered = float(np.where(data.logging_probs == 0, inputs.target, 0.0).sum() / data.n)
    return Diagnostics(
        ess=ess,
        max_weight=float(weights.max()),
        unsupported_share=float(np.mean(target_logged == 0)),
        uncovered_mass=uncovered,
    )
