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
(fold, model): no loop over decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def cross_fit(
        self,
        design: npt.ArrayLike,
        actions: npt.ArrayLike,
        n_actions: int,
        targets: npt.ArrayLike,
        groups: npt.ArrayLike | None = None,
    ) -> FloatArray:
        """Out-of-fold predictions of every model's target on every decision.

        ``design`` ``(n, d)``, ``actions`` ``(n,)`` the logged model indices, ``targets``
        ``(n,)`` or ``(n, m)``; returns ``(n, K)`` or ``(n, K, m)`` accordingly. ``groups``
        (``(n,)`` integer keys) keeps each group's decisions in one fold.
        """
        x = np.asarray(design, dtype=np.float64)
        a = np.asarray(actions, dtype=np.int64)
        y = np.asarray(targets, dtype=np.float64)
        single = y.ndim == 1
        if single:
            y = y[:, None]
        n, d = x.shape
        m = y.shape[1]
        out = np.zeros((n, n_actions * m))
        if n == 0:
            return out if single else out.reshape(n, n_actions, m)
        folds = self.fold_of(n, groups)
        # Sort once by (fold, model): each regression then reads one contiguous block.
        key = folds * n_actions + a
        order = np.argsort(key, kind="stable")
        bounds = np.searchsorted(key[order], np.arange(self.folds * n_actions + 1))
        xs, ys = x[order], y[order]
        fold_sizes = np.bincount(folds, minlength=self.folds)
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
                if counts[k] == 0:
                    continue
                gram = grams[k] + self.l2 * np.eye(d)
                # X'(y - mean) = X'y - (X'1) mean'
                rhs = moments[k] - np.outer(feature_sums[k], means[k])
                weights[:, k * m : (k + 1) * m] = np.linalg.solve(gram, rhs)
            # Every row's prediction (cheap), kept for this fold's rows. (W'X')' is a BLAS
            # product; numpy's X @ W with a short inner dimension is ten times slower.
            predicted = (weights.T @ x.T).T
            predicted += means.reshape(-1)
            np.clip(predicted, np.tile(low, n_actions), np.tile(high, n_actions), out=predicted)
            np.copyto(out, predicted, where=(folds == fold)[:, None])
        return out if single else out.reshape(n, n_actions, m)

    def fit_log(self, log: ReplayLog, targets: npt.ArrayLike) -> FloatArray:
        """:meth:`cross_fit` on a log's contexts and logged actions, decisions on the same
        prompt (same logged prompt hash) kept in one fold."""
        return self.cross_fit(
            design_matrix(log), log.actions, log.n_actions, targets, groups=log.prompt_groups
        )


__all__ = ["RidgeRewardModel", "design_matrix"]
