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


def design_matrix(log: ReplayLog) -> npt.NDArray[np.float32]:
    """``(n, d)`` context features of every decision: numeric view, then hashed words."""
    if log.words is None or log.words.shape[1] == 0:
        return log.contexts
    design: npt.NDArray[np.float32] = np.hstack([log.contexts, log.words])
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
        x = np.asarray(design)
        a = np.asarray(actions, dtype=np.int64)
        y = np.asarray(targets, dtype=np.float64)
        single = y.ndim == 1
        if single:
            y = y[:, None]
        n, d = x.shape
        m = y.shape[1]
        out = np.zeros((n, n_actions, m))
        if n == 0:
            return out[:, :, 0] if single else out
        folds = self.fold_of(n, groups)
        for fold in range(self.folds):
            test = folds == fold
            train = ~test
            if not test.any():
                continue
            if not train.any():
                out[test] = y.mean(axis=0)
                continue
            y_train, a_train, x_train = y[train], a[train], x[train]
            overall = y_train.mean(axis=0)
            low, high = y_train.min(axis=0), y_train.max(axis=0)
            weights = np.zeros((d, n_actions * m))
            intercepts = np.zeros(n_actions * m)
            for k in range(n_actions):
                rows = a_train == k
                count = int(rows.sum())
                block = slice(k * m, (k + 1) * m)
                if count == 0:
                    intercepts[block] = overall
                    continue
                yk = y_train[rows]
                mean = (yk.sum(axis=0) + self.prior_count * overall) / (count + self.prior_count)
                xk = x_train[rows].astype(np.float64)
                gram = xk.T @ xk
                gram[np.diag_indices(d)] += self.l2
                weights[:, block] = np.linalg.solve(gram, xk.T @ (yk - mean))
                intercepts[block] = mean
            predicted = x[test].astype(np.float64) @ weights + intercepts
            predicted = predicted.reshape(-1, n_actions, m)
            out[test] = np.clip(predicted, low, high)
        return out[:, :, 0] if single else out

    def fit_log(self, log: ReplayLog, targets: npt.ArrayLike) -> FloatArray:
        """:meth:`cross_fit` on a log's contexts and logged actions, decisions on the same
        prompt (same logged prompt hash) kept in one fold."""
        return self.cross_fit(
            design_matrix(log), log.actions, log.n_actions, targets, groups=log.prompt_groups
        )


__all__ = ["RidgeRewardModel", "design_matrix"]
