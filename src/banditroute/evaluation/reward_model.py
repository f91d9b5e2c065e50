"""Reward models for DM and DR: cross-fitted per-model ridge regressions, vectorised.

For every model ``k`` a ridge regression predicts the reward (or several targets at once,
such as quality, cost and latency) from the decision's context: the dense numeric view of the
prompt features plus hashed-word counts (:class:`~banditroute.evaluation.logdata.ReplayLog`
``contexts`` and ``words``). Each model's intercept is its mean target, shrunk towards the
overall mean by ``prior_count`` pseudo-observations, and the weights are fitted to the
centred targets with an L2 penalty ``l2``.

Cross-fitting: the decisions are split at random into ``folds`` parts; predictions for a part
come from regressions fitted on the other parts only, so a decision's own reward never
informs its prediction (which keeps DR's correction term honest). Predictions are clipped to
the range of the training targets. The work is a Gram matrix and a small linear solve per
(fold, model): no loop over decisions. :meth:`RidgeRewardModel.fit` keeps the regressions
(:class:`RidgeFit`) so that the estimators' intervals can include the model's own error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import numpy.typing as npt

from banditroute.evaluation.logdata import ReplayLog

FloatArray = npt.NDArray[np.float64]


def design_matrix(log: ReplayLog) -> FloatArray:
    """``(n, d)`` context features of every decision: numeric view, then hashed words."""
    if log.words is None or log.words.shape[1] == 0:
        return log.contexts
    design: FloatArray = np.hstack([log.contexts, log.words])
    return design


@dataclass(frozen=True)
class RidgeFit:
    """A cross-fitted :class:`RidgeRewardModel` with what its own error needs: per fold ``f``
    (the regressions fitted without fold ``f``, predicting it) and model ``a``, the inverse
    penalised Gram matrix, intercept, weights, count and feature sums, and the design and
    targets sorted by (fold, model).

    :meth:`influence` linearises the fit: an estimate that reads the predictions with
    coefficients ``c[i, a]`` (``mean_i sum_a c[i, a] q(x_i, a)``) moves, when training decision
    ``j`` of model ``a`` is added with weight ``eps``, by ``eps / n`` times
    ``(cbar - C' H^-1 s) (y_j - m) / (count + prior) + (C' H^-1 x_j) e_j`` summed over the
    folds it trains (``C = sum_i c[i, a] x_i`` and ``cbar = sum_i c[i, a]`` over the fold's
    rows, ``H`` the penalised Gram matrix, ``s`` the feature sums, ``m`` the intercept, ``e_j``
    the training residual; clipping of predictions ignored). Adding these per-decision terms
    to an estimator's per-sample values makes a bootstrap of them resample the model's fit as
    well, to first order the same as refitting it in every resample.
    """

    all_predictions: FloatArray
    folds: npt.NDArray[np.int64]
    order: npt.NDArray[np.int64]
    bounds: npt.NDArray[np.int64]
    sorted_design: FloatArray
    sorted_targets: FloatArray
    inverses: FloatArray
    means: FloatArray
    weights: FloatArray
    counts: FloatArray
    feature_sums: FloatArray
    prior_count: float
    target: int = 0

    @property
    def n_actions(self) -> int:
        """Number of models ``K``."""
        return int(self.all_predictions.shape[1])

    @property
    def predictions(self) -> FloatArray:
        """``(n, K)`` out-of-fold predictions of the selected target."""
        selected: FloatArray = self.all_predictions[:, :, self.target]
        return selected

    def for_target(self, index: int) -> RidgeFit:
        """The same fit, reading target ``index`` (of a multi-target fit)."""
        if not 0 <= index < self.all_predictions.shape[2]:
            count = self.all_predictions.shape[2]
            raise ValueError(f"index: no target {index} in a fit of {count}")
        return replace(self, target=index)

    def _slice(self, fold: int, action: int) -> slice:
        k = self.n_actions
        return slice(int(self.bounds[fold * k + action]), int(self.bounds[fold * k + action + 1]))

    def coefficient_sums(
        self, target: FloatArray | None = None, logged: FloatArray | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """``(C, cbar)``, ``(folds, K, d)`` and ``(folds, K)``: the sums over each fold's rows
        of ``c[i, a] x_i`` and ``c[i, a]`` for ``c[i, a] = target[i, a] - 1[a = a_i] logged[i]``
        (either part may be left out)."""
        n_folds, k = self.counts.shape
        d = self.sorted_design.shape[1]
        sums, totals = np.zeros((n_folds, k, d)), np.zeros((n_folds, k))
        xs = self.sorted_design
        if target is not None:
            ordered = target[self.order]
            for fold in range(n_folds):
                rows = slice(int(self.bounds[fold * k]), int(self.bounds[(fold + 1) * k]))
                sums[fold] = ordered[rows].T @ xs[rows]
                totals[fold] = ordered[rows].sum(axis=0)
        if logged is not None:
            minus, minus_totals = self.logged_sums([logged])[0]
            sums += minus
            totals += minus_totals
        return sums, totals

    def logged_sums(self, logged: Sequence[FloatArray]) -> list[tuple[FloatArray, FloatArray]]:
        """:meth:`coefficient_sums` of ``-1[a = a_i] logged[i]`` alone for several ``logged``
        arrays at once (one gather and one product per (fold, model) for all of them)."""
        n_folds, k = self.counts.shape
        d = self.sorted_design.shape[1]
        count = len(logged)
        sums, totals = np.zeros((count, n_folds, k, d)), np.zeros((count, n_folds, k))
        ordered = np.stack(logged)[:, self.order]  # (S, n) in (fold, model) order
        xs = self.sorted_design
        for fold in range(n_folds):
            for action in range(k):
                rows = self._slice(fold, action)
                sums[:, fold, action] = -(ordered[:, rows] @ xs[rows])
                totals[:, fold, action] = -ordered[:, rows].sum(axis=1)
        return [(sums[index], totals[index]) for index in range(count)]

    def influence(self, sums: tuple[FloatArray, FloatArray]) -> FloatArray:
        """``(n,)`` per-decision terms of the fit's error (class docstring) for coefficient
        sums from :meth:`coefficient_sums`; their mean is not exactly 0 (ridge)."""
        out: FloatArray = self.influences([sums])[:, 0]
        return out

    def influences(self, sums: Sequence[tuple[FloatArray, FloatArray]]) -> FloatArray:
        """:meth:`influence` for several coefficient sums at once, ``(n, len(sums))``: one
        pass over the decisions for all of them."""
        from threadpoolctl import threadpool_limits  # here: the CLI's start-up skips it

        with threadpool_limits(limits=1, user_api="blas"):  # many small products
            return self._influences(sums)

    def _influences(self, sums: Sequence[tuple[FloatArray, FloatArray]]) -> FloatArray:
        n_folds, k = self.counts.shape
        xs = self.sorted_design
        values = np.zeros((xs.shape[0], len(sums)))
        coefficients = np.stack([c for c, _ in sums], axis=-1)  # (folds, K, d, S)
        totals = np.stack([t for _, t in sums], axis=-1)  # (folds, K, S)
        for fold in range(n_folds):
            for action in range(k):
                if self.counts[fold, action] == 0:
                    continue
                directions = self.inverses[fold, action] @ coefficients[fold, action]  # (d, S)
                alphas = (totals[fold, action] - self.feature_sums[fold, action] @ directions) / (
                    self.counts[fold, action] + self.prior_count
                )
                for other in range(n_folds):
                    if other == fold:
                        continue
                    rows = self._slice(other, action)
                    centred, residual = self._training_terms[(fold, other, action)]
                    block = xs[rows] @ directions
                    block *= residual[:, None]
                    block += centred[:, None] * alphas[None, :]
                    values[rows] += block
        out = np.empty_like(values)
        out[self.order] = values
        return out

    @cached_property
    def _training_terms(self) -> dict[tuple[int, int, int], tuple[FloatArray, FloatArray]]:
        """Per (fold, training fold, model): the training rows' targets minus the intercept,
        and their residuals, under the regression fitted without ``fold``."""
        n_folds, k = self.counts.shape
        m, t = self.means.shape[2], self.target
        xs, ys = self.sorted_design, self.sorted_targets[:, t]
        terms = {}
        for fold in range(n_folds):
            for action in range(k):
                weights = self.weights[fold][:, action * m + t]
                for other in range(n_folds):
                    if other != fold:
                        rows = self._slice(other, action)
                        centred = ys[rows] - self.means[fold, action, t]
                        terms[(fold, other, action)] = (centred, centred - xs[rows] @ weights)
        return terms


@dataclass(frozen=True)
class RidgeRewardModel:
    """Cross-fitted per-model ridge regression (see the module docstring)."""

    l2: float = 1.0
    folds: int = 2
    prior_count: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.l2 > 0:
            raise ValueError(f"l2: must be > 0, got {self.l2!r}")
        if self.folds < 2:
            raise ValueError(f"folds: must be >= 2, got {self.folds!r}")
        if self.prior_count < 0:
            raise ValueError(f"prior_count: must be >= 0, got {self.prior_count!r}")

    def describe(self) -> dict[str, object]:
        """Settings, for reports."""
        return {
            "kind": "ridge",
            "l2": self.l2,
            "folds": self.folds,
            "prior_count": self.prior_count,
            "seed": self.seed,
        }

    def fold_of(self, n: int, groups: npt.ArrayLike | None = None) -> npt.NDArray[np.int64]:
        """The fold of each of ``n`` decisions: seeded at random with balanced sizes, or, given
        ``groups`` (e.g. a hash of each prompt), one seeded random fold per group, unless that
        leaves a fold with under a quarter of its share (too few distinct groups)."""
        if groups is not None and n > 0:
            # A seeded splitmix64-style mix of each group key; uint64 arithmetic wraps.
            key = np.asarray(groups).astype(np.uint64) ^ np.uint64(
                self.seed * 0x9E3779B97F4A7C15 % 2**64
            )
            with np.errstate(over="ignore"):
                key = (key ^ (key >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
                key = (key ^ (key >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
                key ^= key >> np.uint64(31)
            by_group: npt.NDArray[np.int64] = (key % np.uint64(self.folds)).astype(np.int64)
            sizes = np.bincount(by_group, minlength=self.folds)
            if sizes.min() >= n / (4 * self.folds):
                return by_group
        order = np.random.default_rng([self.seed, 0xF01D]).permutation(n)
        folds = np.empty(n, dtype=np.int64)
        folds[order] = np.arange(n) % self.folds
        return folds

    def fit(
        self,
        design: npt.ArrayLike,
        actions: npt.ArrayLike,
        n_actions: int,
        targets: npt.ArrayLike,
        groups: npt.ArrayLike | None = None,
    ) -> RidgeFit:
        """Out-of-fold predictions of every model's target on every decision
        (:attr:`RidgeFit.predictions`), with what the estimators need to account for the fit's
        own error.

        ``design`` ``(n, d)``, ``actions`` ``(n,)`` the logged model indices, ``targets``
        ``(n,)`` or ``(n, m)`` (several targets at once, selected with
        :meth:`RidgeFit.for_target`). ``groups`` (``(n,)`` integer keys) keeps each group's
        decisions in one fold.
        """
        x = np.asarray(design, dtype=np.float64)
        a = np.asarray(actions, dtype=np.int64)
        y = np.asarray(targets, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        n, d = x.shape
        m = y.shape[1]
        out = np.zeros((n, n_actions * m))
        folds = self.fold_of(n, groups)
        # Sort once by (fold, model): each regression then reads one contiguous block.
        key = folds * n_actions + a
        order = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[order], np.arange(self.folds * n_actions + 1))
        xs, ys = x[order], y[order]
        fold_sizes = np.bincount(folds, minlength=self.folds)
        inverses = np.zeros((self.folds, n_actions, d, d))
        all_means = np.zeros((self.folds, n_actions, m))
        all_weights = np.zeros((self.folds, d, n_actions * m))
        all_counts = np.zeros((self.folds, n_actions))
        all_sums = np.zeros((self.folds, n_actions, d))
        for fold in range(self.folds):
            if fold_sizes[fold] == 0:
                continue
            train = folds != fold
            if not train.any():
                out[folds == fold] = np.tile(y.mean(axis=0), n_actions)
                continue
            y_train = y[train]
            overall = y_train.mean(axis=0)
            low, high = y_train.min(axis=0), y_train.max(axis=0)
            grams = np.zeros((n_actions, d, d))
            moments = np.zeros((n_actions, d, m))
            sums = np.zeros((n_actions, m))
            feature_sums = np.zeros((n_actions, d))
            counts = np.zeros(n_actions)
            for other in range(self.folds):
                if other == fold:
                    continue
                for k in range(n_actions):
                    start, stop = bounds[other * n_actions + k], bounds[other * n_actions + k + 1]
                    xk, yk = xs[start:stop], ys[start:stop]
                    grams[k] += xk.T @ xk
                    moments[k] += xk.T @ yk
                    sums[k] += yk.sum(axis=0)
                    feature_sums[k] += xk.sum(axis=0)
                    counts[k] += stop - start
            # Intercept: the model's mean, shrunk to the overall mean; weights fit the rest.
            means = (sums + self.prior_count * overall) / (counts + self.prior_count)[:, None]
            weights = np.zeros((d, n_actions * m))
            for k in range(n_actions):
                inverses[fold, k] = np.linalg.inv(grams[k] + self.l2 * np.eye(d))
                if counts[k] == 0:
                    continue
                # X'(y - mean) = X'y - (X'1) mean'
                rhs = moments[k] - np.outer(feature_sums[k], means[k])
                weights[:, k * m : (k + 1) * m] = inverses[fold, k] @ rhs
            all_means[fold], all_weights[fold] = means, weights
            all_counts[fold], all_sums[fold] = counts, feature_sums
            # Every row's prediction (cheap), kept for this fold's rows. (W'X')' is a BLAS
            # product; numpy's X @ W with a short inner dimension is ten times slower.
            predicted = (weights.T @ x.T).T
            predicted += means.reshape(-1)
            np.clip(predicted, np.tile(low, n_actions), np.tile(high, n_actions), out=predicted)
            np.copyto(out, predicted, where=(folds == fold)[:, None])
        return RidgeFit(
            all_predictions=out.reshape(n, n_actions, m),
            folds=folds,
            order=order,
            bounds=bounds,
            sorted_design=xs,
            sorted_targets=ys,
            inverses=inverses,
            means=all_means,
            weights=all_weights,
            counts=all_counts,
            feature_sums=all_sums,
            prior_count=self.prior_count,
        )

    def fit_log(self, log: ReplayLog, targets: npt.ArrayLike) -> RidgeFit:
        """:meth:`fit` on a log's contexts and logged actions, decisions on the same prompt
        (same logged prompt hash) kept in one fold."""
        return self.fit(
            design_matrix(log), log.actions, log.n_actions, targets, groups=log.prompt_groups
        )


__all__ = ["RidgeFit", "RidgeRewardModel", "design_matrix"]
