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

``reward_model`` is an ``(n, K)`` matrix (taken as known) or a fitted model
(:class:`FittedRewardModel`, e.g. ``RidgeFit``): then every model-based estimator's values
carry the linearised effect of each decision on the model's fit, so the intervals include the
model's own error, and DM's interval also covers the model's error that the logged residuals
reveal. With ``reward_range`` estimates and intervals are clipped to it (:class:`Estimate`
keeps the raw values); with ``unseen_range`` they cover the candidate's traffic to actions the
logger never tried at any value in that range.

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
from statistics import NormalDist
from typing import ClassVar, Protocol, cast

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


class FittedRewardModel(Protocol):
    """A reward model that can say how its own fitting error moves an estimate (for example
    :class:`~banditroute.evaluation.reward_model.RidgeFit`)."""

    @property
    def predictions(self) -> FloatArray:
        """``(n, K)`` predicted rewards."""

    def coefficient_sums(
        self, target: FloatArray | None = None, logged: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Sufficient sums of the coefficients ``target[i, a] - 1[a = a_i] logged[i]``."""

    def logged_sums(self, logged: Sequence[FloatArray]) -> list[tuple[FloatArray, FloatArray]]:
        """Those sums for ``-1[a = a_i] logged[i]`` alone, for several ``logged`` at once."""

    def influences(self, sums: Sequence[tuple[FloatArray, FloatArray]]) -> FloatArray:
        """``(n, len(sums))`` per-decision terms of the fit's error for those coefficients."""


Key = tuple[object, ...]
"""A cache key of a model-error term or corrected values (``("dr",)``, ``(clip, tau)``, ...)."""
ModelItem = tuple[Key, FloatArray | None]
"""A model-error term to compute: its key and the logged-action weights (None: none)."""


def _is_fitted(reward_model: object) -> bool:
    return hasattr(reward_model, "influences") and hasattr(reward_model, "coefficient_sums")


class _Inputs:
    """Validated inputs and the per-decision quantities estimators share, each computed once."""

    def __init__(self, data: LoggedData, target: npt.ArrayLike, reward_model: object) -> None:
        self.data = data
        self.target = data.validate_target(target)
        self._fit: FittedRewardModel | None = None
        if _is_fitted(reward_model):
            self._fit = cast(FittedRewardModel, reward_model)
            reward_model = self._fit.predictions
        self._reward_model = (
            None if reward_model is None else data.validate_reward_model(reward_model)
        )
        self.rows = np.arange(data.n)
        self._errors: dict[tuple[object, ...], FloatArray] = {}
        self._corrected: dict[tuple[object, ...], FloatArray] = {}

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

    @cached_property
    def ess(self) -> float:
        """Effective sample size of the candidate's weights, ``(Σ w)² / Σ w²``."""
        weights = self.weights
        squares = float(np.dot(weights, weights))
        return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0

    @cached_property
    def unseen_mask(self) -> npt.NDArray[np.bool_] | None:
        """Eligible actions the logging policy gave probability 0 (None without
        ``logging_probs``)."""
        if self.data.logging_probs is None:
            return None
        mask: npt.NDArray[np.bool_] = (self.data.logging_probs == 0) & self.data.mask
        return mask

    @cached_property
    def unseen_mass(self) -> float:
        """Mean candidate probability on actions the logger never tried."""
        mask = self.unseen_mask
        return 0.0 if mask is None else float(np.where(mask, self.target, 0.0).sum() / self.data.n)

    def unseen_direct(self, estimator: str) -> float:
        """Mean of what the reward model predicts for the candidate's never-tried actions."""
        mask = self.unseen_mask
        if mask is None:
            return 0.0
        q = self.reward_model(estimator)
        return float(np.where(mask, self.target * q, 0.0).sum() / self.data.n)

    @cached_property
    def _target_sums(self) -> tuple[FloatArray, FloatArray]:
        assert self._fit is not None
        return self._fit.coefficient_sums(self.target, None)

    def model_error(
        self, estimator: str, key: tuple[object, ...], logged: FloatArray | None
    ) -> FloatArray | None:
        """Centred per-decision terms of the reward model's own fitting error in an estimate
        that reads it with coefficients ``π(a|x_i) - 1[a = a_i] logged_i`` (None without a
        fitted model: a plain matrix is taken as known). Centred, they leave the estimate as
        it is and add the model's error to its interval. Cached under ``key``."""
        return self.model_errors(estimator, [(key, logged)])[0]

    def model_errors(
        self, estimator: str, items: Sequence[tuple[tuple[object, ...], FloatArray | None]]
    ) -> list[FloatArray | None]:
        """:meth:`model_error` for several ``(key, logged)`` at once (one pass of the fit)."""
        self.reward_model(estimator)
        if self._fit is None:
            return [None for _ in items]
        todo = [(key, logged) for key, logged in items if key not in self._errors]
        if todo:
            coefficients, totals = self._target_sums
            loggeds = [logged for _, logged in todo if logged is not None]
            minus = iter(self._fit.logged_sums(loggeds) if loggeds else [])
            sums = []
            for _, logged in todo:
                if logged is None:
                    sums.append((coefficients, totals))
                else:
                    less, less_totals = next(minus)
                    sums.append((coefficients + less, totals + less_totals))
            values = self._fit.influences(sums)
            values -= values.mean(axis=0)
            for index, (key, _) in enumerate(todo):
                self._errors[key] = values[:, index]
        return [self._errors[key] for key, _ in items]

    def kept(
        self, threshold: float, *, clip: bool = False
    ) -> tuple[tuple[object, ...], FloatArray]:
        """The cache key and the weights ``k`` a correction keeps: ``min(w, threshold)``
        (``clip``) or ``1[w <= threshold] w`` (switch); all of ``w`` for inf."""
        weights = self.weights
        if math.isinf(threshold):
            return ("dr",), weights
        if clip:
            return (clip, threshold), np.minimum(weights, threshold)
        return (clip, threshold), np.where(weights <= threshold, weights, 0.0)

    def prefetch(self, estimators: Sequence[Estimator]) -> None:
        """Compute every model-error term the estimators will need in one pass of the fit."""
        if self._fit is None or self._reward_model is None:
            return
        items = [item for e in estimators for item in e._model_items(self)]
        if items:
            self.model_errors("evaluate", list(dict(items).items()))

    def corrected(self, estimator: str, threshold: float, *, clip: bool = False) -> FloatArray:
        """``dm_i + k_i δ_i`` plus the model-error terms, with ``k = min(w, threshold)``
        (``clip``) or ``1[w <= threshold] w`` (switch); ``threshold = inf`` is DR. Cached."""
        return self.corrected_many(estimator, [threshold], clip=clip)[0]

    def corrected_many(
        self, estimator: str, thresholds: Sequence[float], *, clip: bool = False
    ) -> list[FloatArray]:
        """:meth:`corrected` for several thresholds, their model errors in one pass."""
        todo: dict[tuple[object, ...], FloatArray] = {}
        keys = []
        for threshold in thresholds:
            key, kept = self.kept(threshold, clip=clip)
            keys.append(key)
            if key not in self._corrected:
                todo[key] = kept
        if todo:
            errors = self.model_errors(estimator, list(todo.items()))
            direct, residuals = self.direct(estimator), self.residuals(estimator)
            for (key, kept), error in zip(todo.items(), errors, strict=True):
                self._corrected[key] = _with_error(direct + kept * residuals, error)
        return [self._corrected[key] for key in keys]


def _with_error(values: FloatArray, error: FloatArray | None) -> FloatArray:
    """``values`` plus the model-error terms, when there are any."""
    return values if error is None else values + error


@dataclass(frozen=True)
class _Parts:
    """An estimate as ``mean(base) + Σ num / Σ den`` (a missing part contributes nothing).

    Plain estimators only have ``base``; self-normalised ones add the ratio ``num / den``,
    which the bootstrap recomputes in every resample. ``check`` (DM's): per-decision terms whose
    mean estimates the reward model's error under the candidate (the importance-weighted
    residuals); the interval is widened to cover ``estimate + mean(check)`` as well.
    """

    base: FloatArray | None
    num: FloatArray | None = None
    den: FloatArray | None = None
    check: FloatArray | None = None
    tau: float | None = None

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


TAU_GRID: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5,
)  # fmt: skip
"""Switch-DR's candidate thresholds when it chooses its own (those below the largest weight)."""

MAX_TAUS = 8
"""At most this many finite thresholds (the largest below the largest weight) are tried."""


@dataclass(frozen=True)
class _Selected:
    """Switch-DR with its threshold chosen from the data (Wang et al. 2017).

    ``values[t]`` are the per-decision values at ``taus[t]`` (``taus[0]`` is inf: DR) and
    ``dropped[t]`` the corrections that threshold drops (their mean estimates its bias, since
    DR is unbiased). The chosen threshold minimises the estimated mean squared error
    ``var(values) / n + mean(dropped)²``: corrections are dropped only where they add more
    variance than the bias they remove. The bootstrap re-chooses in every resample, so the
    interval covers the choice as well.
    """

    taus: tuple[float, ...]
    values: tuple[FloatArray, ...]
    dropped: tuple[FloatArray, ...]
    spread: FloatArray
    check: None = None

    @classmethod
    def build(
        cls, taus: Sequence[float], values: Sequence[FloatArray], dropped: Sequence[FloatArray]
    ) -> _Selected:
        n = values[0].shape[0]
        ddof = 1 if n > 1 else 0
        spread = np.array([float(v.var(ddof=ddof)) / n for v in values])
        return cls(tuple(taus), tuple(values), tuple(dropped), spread)

    def _scores(self, dropped_means: FloatArray) -> FloatArray:
        scores: FloatArray = self.spread + dropped_means**2
        return scores

    @cached_property
    def choice(self) -> int:
        means = np.array([float(d.mean()) if d.size else 0.0 for d in self.dropped])
        return int(np.argmin(self._scores(means)))

    @property
    def tau(self) -> float:
        return self.taus[self.choice]

    def estimate(self, name: str) -> float:
        return float(self.values[self.choice].mean())

    def per_sample(self, n: int, name: str) -> FloatArray:
        return self.values[self.choice].copy()

    def linearised(self, n: int, name: str) -> FloatArray:
        return self.values[self.choice].copy()

    def columns(self) -> list[FloatArray]:
        return [*self.values, *(d for d in self.dropped if d.size)]

    def replicates(self, sums: list[FloatArray], n: int) -> FloatArray:
        parts = iter(sums)
        value_means = np.column_stack([next(parts) / n for _ in self.values])
        dropped_means = np.column_stack(
            [next(parts) / n if d.size else np.zeros(value_means.shape[0]) for d in self.dropped]
        )
        chosen = np.argmin(self._scores(dropped_means), axis=1)
        picked: FloatArray = value_means[np.arange(value_means.shape[0]), chosen]
        return picked


def _check_hyper(name: str, value: float, *, positive: bool) -> None:
    numeric = isinstance(value, int | float | np.integer | np.floating)
    if isinstance(value, bool) or not numeric or math.isnan(value):
        raise ValueError(f"{name}: must be a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name}: must be > 0 (inf disables it), got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: must be >= 0 (inf disables it), got {value!r}")


@dataclass(frozen=True)
class Estimate(Interval):
    """An estimator's interval, clipped to the reward range when one was given.

    ``raw_estimate``, ``raw_lower`` and ``raw_upper`` are the values before clipping;
    ``outside_range`` says the raw estimate itself fell outside the range (the estimator
    extrapolated past any reward the objective can give: read it with suspicion). ``tau`` is
    the threshold switch-DR used (chosen from the data unless fixed).
    """

    raw_estimate: float = math.nan
    raw_lower: float = math.nan
    raw_upper: float = math.nan
    outside_range: bool = False
    tau: float | None = None

    @property
    def clipped(self) -> bool:
        """Whether clipping changed the estimate or an end of the interval."""
        return (self.estimate, self.lower, self.upper) != (
            self.raw_estimate,
            self.raw_lower,
            self.raw_upper,
        )

    def as_dict(self) -> dict[str, object]:
        """``{"value", "lower", "upper", "raw_value", "raw_lower", "raw_upper",
        "outside_range"}`` (and ``"tau"`` for switch-DR, ``"inf"`` for none)."""
        out: dict[str, object] = {
            **super().as_dict(),
            "raw_value": self.raw_estimate,
            "raw_lower": self.raw_lower,
            "raw_upper": self.raw_upper,
            "outside_range": self.outside_range,
        }
        if self.tau is not None:
            out["tau"] = self.tau if math.isfinite(self.tau) else "inf"
        return out


def check_range(reward_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """``reward_range`` as ``(low, high)`` floats with ``low <= high``, else ``ValueError``."""
    if reward_range is None:
        return None
    low, high = (float(v) for v in reward_range)
    if math.isnan(low) or math.isnan(high) or low > high:
        raise ValueError(f"reward_range: need low <= high, got {reward_range!r}")
    return low, high


@dataclass(frozen=True)
class Estimator(ABC):
    """Shared interface; subclasses define :meth:`_parts` and their hyperparameter fields."""

    name: ClassVar[str]
    needs_reward_model: ClassVar[bool]
    unseen_rule: ClassVar[str] = "model"
    """What the estimate assumes for actions the logger never tried: ``zero`` (IPS counts
    them as 0), ``normalised`` (SNIPS: the tried actions' mean) or ``model`` (the reward
    model's extrapolation)."""

    @abstractmethod
    def _parts(self, inputs: _Inputs) -> _Parts | _Selected:
        """The estimate's parts on validated inputs."""

    def _model_items(self, inputs: _Inputs) -> list[ModelItem]:
        """The model-error terms :meth:`_parts` will ask for (computed together up front)."""
        return []

    def per_sample(
        self, data: LoggedData, target: npt.ArrayLike, reward_model: object = None
    ) -> FloatArray:
        """``(n,)`` per-decision values whose mean is :meth:`estimate`."""
        return self._parts(_Inputs(data, target, reward_model)).per_sample(data.n, self.name)

    def estimate(
        self, data: LoggedData, target: npt.ArrayLike, reward_model: object = None
    ) -> float:
        """The estimated value of ``target`` (mean reward per decision), unclipped."""
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
        reward_range: tuple[float, float] | None = None,
        unseen_range: tuple[float, float] | None = None,
    ) -> Estimate:
        """The estimate with a two-sided ``level`` confidence interval (see module docstring)."""
        (result,) = evaluate(
            [self],
            data,
            target,
            reward_model,
            method=method,
            level=level,
            n_boot=n_boot,
            seed=seed,
            reward_range=reward_range,
            unseen_range=unseen_range,
        )
        return result


@dataclass(frozen=True)
class IPS(Estimator):
    """Inverse propensity scoring: ``mean(min(w, clip) · r)``; unbiased when ``clip=inf``."""

    name: ClassVar[str] = "ips"
    needs_reward_model: ClassVar[bool] = False
    unseen_rule: ClassVar[str] = "zero"
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
    unseen_rule: ClassVar[str] = "normalised"

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = inputs.weights
        return _Parts(None, weights * inputs.data.rewards, weights)


@dataclass(frozen=True)
class DM(Estimator):
    """Direct method: ``mean(Σ_a π(a|x) q̂(x, a))``; as good as the reward model.

    With a fitted model its interval includes the model's fitting error and is widened to
    cover the model's error under the candidate as the logged residuals estimate it (DR's
    correction), so it is honest about what the model cannot know.
    """

    name: ClassVar[str] = "dm"
    needs_reward_model: ClassVar[bool] = True

    def _model_items(self, inputs: _Inputs) -> list[ModelItem]:
        return [(("dm",), None), inputs.kept(math.inf)]

    def _parts(self, inputs: _Inputs) -> _Parts:
        error, _ = inputs.model_errors(self.name, self._model_items(inputs))
        base = _with_error(inputs.direct(self.name), error)
        corrected = inputs.corrected(self.name, math.inf)
        return _Parts(base, check=corrected - base)


@dataclass(frozen=True)
class DR(Estimator):
    """Doubly robust: ``mean(dm + min(w, clip) · (r - q̂(x, a)))``; ``clip`` < inf clips."""

    name: ClassVar[str] = "dr"
    needs_reward_model: ClassVar[bool] = True
    clip: float = math.inf

    def __post_init__(self) -> None:
        _check_hyper("clip", self.clip, positive=True)

    def _model_items(self, inputs: _Inputs) -> list[ModelItem]:
        return [inputs.kept(self.clip, clip=True)]

    def _parts(self, inputs: _Inputs) -> _Parts:
        return _Parts(inputs.corrected(self.name, self.clip, clip=True))


@dataclass(frozen=True)
class SNDR(Estimator):
    """Self-normalised DR: ``mean(dm) + Σ w (r - q̂(x, a)) / Σ w``."""

    name: ClassVar[str] = "sndr"
    needs_reward_model: ClassVar[bool] = True

    def _model_items(self, inputs: _Inputs) -> list[ModelItem]:
        mean = float(inputs.weights.mean())
        return [(("sndr",), inputs.weights / mean if mean > 0 else None)]

    def _parts(self, inputs: _Inputs) -> _Parts:
        weights = inputs.weights
        (error,) = inputs.model_errors(self.name, self._model_items(inputs))
        base = _with_error(inputs.direct(self.name), error)
        return _Parts(base, weights * inputs.residuals(self.name), weights)


@dataclass(frozen=True)
class SwitchDR(Estimator):
    """Switch DR: ``mean(dm + 1[w <= tau] · w · (r - q̂(x, a)))``; inf is DR, 0 is DM.

    ``tau=None`` (the default) chooses the threshold from the data: the one of
    :data:`TAU_GRID` (below the largest weight) or inf with the least estimated mean squared
    error (see :class:`_Selected`), re-chosen in every bootstrap resample.
    """

    name: ClassVar[str] = "switch-dr"
    needs_reward_model: ClassVar[bool] = True
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.tau is not None:
            _check_hyper("tau", self.tau, positive=False)

    def _taus(self, inputs: _Inputs) -> list[float]:
        if self.tau is not None:
            return [self.tau]
        largest = float(inputs.weights.max()) if inputs.weights.size else 0.0
        return [math.inf, *[t for t in TAU_GRID if t < largest][-MAX_TAUS:][::-1]]

    def _model_items(self, inputs: _Inputs) -> list[ModelItem]:
        return [inputs.kept(tau) for tau in self._taus(inputs)]

    def _parts(self, inputs: _Inputs) -> _Parts | _Selected:
        if self.tau is not None:
            return _Parts(inputs.corrected(self.name, self.tau), tau=self.tau)
        weights = inputs.weights
        taus = self._taus(inputs)
        finite = taus[1:]
        residuals = inputs.residuals(self.name)
        values = inputs.corrected_many(self.name, taus)
        dropped = [np.zeros(0)] + [np.where(weights > t, weights, 0.0) * residuals for t in finite]
        return _Selected.build(taus, values, dropped)


def _hull(first: Interval, second: Interval) -> Interval:
    """``first``'s estimate with an interval covering both."""
    return Interval(
        first.estimate,
        min(first.lower, second.lower),
        max(first.upper, second.upper),
        first.level,
    )


def _widen(
    interval: Interval,
    estimator: Estimator,
    inputs: _Inputs,
    unseen: tuple[float, float] | None,
) -> Interval:
    """``interval`` widened for the candidate's traffic to actions the logger never tried.

    No log says anything about those: the estimator's interval covers the value of the rest,
    and the never-tried share ``u`` (mean candidate probability on them) may be worth anything
    in ``unseen`` (``[low, high]``), so the interval becomes ``[L' + u low, U' + u high]`` with
    ``L'``, ``U'`` the ends without the estimator's own guess for that share (IPS guesses 0;
    SNIPS rescales the tried share by ``1 - u``; the others subtract the reward model's
    extrapolation). The estimate itself is unchanged (and stays inside).
    """
    u = inputs.unseen_mass
    if unseen is None or u <= 0:
        return interval
    low, high = interval.lower, interval.upper
    if estimator.unseen_rule == "normalised":
        low, high = (1 - u) * low, (1 - u) * high
    elif estimator.unseen_rule == "model":
        guess = inputs.unseen_direct(estimator.name)
        low, high = low - guess, high - guess
    return Interval(
        interval.estimate,
        min(interval.estimate, low + u * unseen[0]),
        max(interval.estimate, high + u * unseen[1]),
        interval.level,
    )


def _finish(
    interval: Interval, parts: _Parts | _Selected, reward_range: tuple[float, float] | None
) -> Estimate:
    """The :class:`Estimate`: ``interval`` clipped to ``reward_range``, raw values kept."""
    low, high = reward_range if reward_range is not None else (-math.inf, math.inf)
    raw = interval.estimate
    return Estimate(
        min(max(raw, low), high),
        min(max(interval.lower, low), high),
        min(max(interval.upper, low), high),
        interval.level,
        raw_estimate=raw,
        raw_lower=interval.lower,
        raw_upper=interval.upper,
        outside_range=not low <= raw <= high,
        tau=parts.tau,
    )


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
    reward_range: tuple[float, float] | None = None,
    unseen_range: tuple[float, float] | None = None,
) -> list[Estimate]:
    """Intervals for several estimators of the same ``target``, in the order given.

    Inputs are validated once, and the bootstrap draws one set of resamples for all of them,
    so each result equals ``estimator.interval(...)`` at the same integer seed up to float
    rounding (the resampled sums are computed in one matrix product). With a ``Generator`` as
    seed, separate calls would consume different draws. ``reward_model`` is a matrix (taken
    as known) or a fitted model (:class:`FittedRewardModel`, whose fitting error the intervals
    then include). With ``reward_range`` every estimate and interval is clipped to it (an
    :class:`Estimate` keeps the raw values and flags a raw estimate outside it). With
    ``unseen_range`` (the rewards the models the logger never tried might give), the interval
    also covers the candidate's traffic to those (:func:`_widen`).
    """
    chosen = check_method(method)
    level = check_level(level)
    bounds = check_range(reward_range)
    unseen = check_range(unseen_range)
    rng = None
    if chosen == "bootstrap":
        n_boot = check_n_boot(n_boot)
        rng = make_rng(seed)
    inputs = _Inputs(data, target, reward_model)
    inputs.prefetch(estimators)
    named = [(estimator, estimator._parts(inputs)) for estimator in estimators]
    n = data.n
    thin = inputs.ess < THIN_ESS
    plain = inputs.weights * data.rewards  # IPS, the fallback interval of a thin log
    if chosen != "bootstrap":
        if n < 2:
            raise ValueError(f"data: a {chosen} interval needs at least 2 decisions, got {n}")
        build = normal_interval if chosen == "normal" else bernstein_interval
        fallback = build(plain, level=level) if thin else None
        results = []
        for estimator, parts in named:
            values = parts.linearised(n, estimator.name)
            interval = build(values, level=level, estimate=parts.estimate(estimator.name))
            if parts.check is not None:
                checked = values + parts.check
                interval = _hull(
                    interval, build(checked, level=level, estimate=float(checked.mean()))
                )
            if fallback is not None:
                interval = _hull(interval, fallback)
            results.append(_finish(_widen(interval, estimator, inputs, unseen), parts, bounds))
        return results

    columns: list[FloatArray] = []
    slots: dict[int, int] = {}
    if thin:
        slots[id(plain)] = 0
        columns.append(plain)
    for _, parts in named:  # shared arrays (the weights) are resampled once
        extra = [] if parts.check is None else [parts.check]
        for column in [*parts.columns(), *extra]:
            if id(column) not in slots:
                slots[id(column)] = len(columns)
                columns.append(column)
    estimates = [parts.estimate(estimator.name) for estimator, parts in named]
    # (m, n) copies each column whole; its transpose is the (n, m) view resample_sums reads
    sums = resample_sums(np.stack(columns).T, n_boot=n_boot, seed=rng)
    results = []
    for estimate, (estimator, parts) in zip(estimates, named, strict=True):
        replicates = parts.replicates([sums[:, slots[id(c)]] for c in parts.columns()], n)
        values = parts.linearised(n, estimator.name)
        interval = _hull(
            percentile_interval(estimate, replicates, level=level),
            _t_interval(estimate, values, inputs.ess, level),
        )
        if parts.check is not None:
            checked = replicates + sums[:, slots[id(parts.check)]] / n
            centre = estimate + float(parts.check.mean())
            interval = _hull(
                interval,
                _hull(
                    percentile_interval(centre, checked, level=level),
                    _t_interval(centre, values + parts.check, inputs.ess, level),
                ),
            )
        if thin:
            centre = float(plain.mean())
            interval = _hull(
                interval,
                _hull(
                    percentile_interval(centre, sums[:, 0] / n, level=level),
                    _t_interval(centre, plain, inputs.ess, level),
                ),
            )
        results.append(_finish(_widen(interval, estimator, inputs, unseen), parts, bounds))
    return results


def _t_quantile(level: float, dof: float) -> float:
    """Two-sided Student t quantile at ``level`` with ``dof`` degrees of freedom (Cornish-Fisher
    expansion around the normal quantile; within 1% from 3 degrees of freedom)."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def _t_interval(estimate: float, values: FloatArray, ess: float, level: float) -> Interval:
    """``estimate ± t · sd(values) / sqrt(n)`` with ``ESS - 1`` degrees of freedom.

    A percentile bootstrap of a mean that a few heavily weighted decisions carry is too short
    (the resamples cannot draw the weighted decisions the sample happened to miss); the
    bootstrap interval is widened to this one where it is shorter, which matters only when
    the effective sample size is small.
    """
    n = values.shape[0]
    if n < 2 or ess <= 1:
        return Interval(estimate, estimate, estimate, level)
    half = _t_quantile(level, max(ess - 1.0, 1.0)) * float(values.std(ddof=1)) / math.sqrt(n)
    return Interval(estimate, estimate - half, estimate + half, level)


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
    ``thin_mass`` — the same for actions the logging policy gave less than
    :data:`THIN_PROPENSITY` (never tried included); None without ``logging_probs``.
    """

    ess: float
    max_weight: float
    unsupported_share: float
    uncovered_mass: float | None = None
    thin_mass: float | None = None


THIN_ESS = 50.0
"""Below this effective sample size the log is thin: a handful of heavily weighted decisions
carry every estimate, the reward model's and the self-normalisation's biases are no longer
small beside the noise, and each bootstrap interval is widened to cover the unbiased IPS
interval as well (``reliability.MIN_ESS`` is the same threshold)."""

THIN_PROPENSITY = 0.005
"""A logging probability below this counts as (almost) never tried (``Diagnostics.thin_mass``)."""


def diagnostics(data: LoggedData, target: npt.ArrayLike) -> Diagnostics:
    """Importance-weight diagnostics of ``target`` on ``data`` (see :class:`Diagnostics`)."""
    inputs = _Inputs(data, target, None)
    weights = inputs.weights
    ess = inputs.ess
    target_logged = inputs.target[inputs.rows, data.actions]
    uncovered = thin = None
    if data.logging_probs is not None:
        uncovered = float(np.where(data.logging_probs == 0, inputs.target, 0.0).sum() / data.n)
        rare = data.logging_probs < THIN_PROPENSITY
        thin = float(np.where(rare, inputs.target, 0.0).sum() / data.n)
    return Diagnostics(
        ess=ess,
        max_weight=float(weights.max()),
        unsupported_share=float(np.mean(target_logged == 0)),
        uncovered_mass=uncovered,
        thin_mass=thin,
    )
