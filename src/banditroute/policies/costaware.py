"""Cost-aware policy: per-model quality models, cost priced at the budget pacer's multiplier.

A learner of one scalar reward ``quality - (cost_weight + lam) * cost`` struggles when a budget
pacer moves ``lam``: every reward it learned was priced at an older multiplier. This policy
keeps the price out of what it learns. For each model it fits a Bayesian linear regression
(prior ``N(0, I / prior_precision)``, noise ``noise``) of the *price-free* value

    v = reward + lam_at_decision * cost_hat(x, a)

on the prompt's dense features, where ``cost_hat`` is the catalogue price of the prompt's tokens
plus the model's typical output, and scores each model at the current multiplier:

    score(x, a) = v_hat(x, a) - lam_now * cost_hat(x, a).

``lam`` comes from :meth:`CostAwarePolicy.follow` (the router's :class:`BudgetPacer`); a
policy that follows nothing uses ``lam = 0`` and is then a plain regression bandit of the
reward. Errors of ``cost_hat`` at a given ``lam`` are absorbed into ``v``.

Exploration, all with honest probabilities:

* ``thompson`` (default): the probability of each model is its share of ``draws`` posterior
  samples in which it scores highest (the router then samples from exactly that vector);
* ``squarecb``: inverse gap weighting of the posterior means with ``gamma = gamma_scale *
  sqrt(updates + 1)``;
* ``epsilon``: ``epsilon / K`` everywhere, the rest on the best posterior mean.

>>> from banditroute.catalog import ModelSpec
>>> from banditroute.features import extract
>>> arms = [ModelSpec("cheap", "p", 0.1, 0.1), ModelSpec("dear", "p", 10, 30)]
>>> policy = CostAwarePolicy(seed=1)
>>> for _ in range(30):
...     policy.learn(extract("2+2?"), arms, 0, 0.5, 0.9)
...     policy.learn(extract("2+2?"), arms, 1, 0.5, 0.2)
>>> policy.distribution(extract("2+2?"), arms).round(2).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from banditroute.catalog import ModelSpec
from banditroute.features import MARKERS, PromptFeatures
from banditroute.policies.base import Policy, Probabilities

Exploration = Literal["thompson", "squarecb", "epsilon"]
EXPLORATIONS: tuple[str, ...] = ("thompson", "squarecb", "epsilon")

_NUMERIC_KEYS: tuple[str, ...] = (
    "bias", "log_tokens", "log_conv_tokens", "shots", "choices", "numbers", "lang_en", *MARKERS,
)  # fmt: skip
NOISE_PSEUDO_COUNT = 5.0
"""Weight, in observations, of the prior noise level in each model's noise estimate."""
_REMEMBERED = 4096
"""How many decisions' multipliers are remembered until their reward arrives."""


def feature_vector(context: PromptFeatures) -> npt.NDArray[np.float64]:
    """The dense features the per-model regressions read (the numeric view, fixed order)."""
    numeric = context.numeric()
    return np.array([numeric[key] for key in _NUMERIC_KEYS], dtype=np.float64)


DIMENSION = len(_NUMERIC_KEYS)


class CostAwarePolicy(Policy):
    """Per-model Bayesian linear value models; cost priced at the pacer's current multiplier."""

    name = "costaware"

    def __init__(
        self,
        *,
        exploration: Exploration = "thompson",
        draws: int = 64,
        posterior_scale: float = 1.0,
        gamma_scale: float = 50.0,
        epsilon: float = 0.05,
        prior_mean: float = 0.5,
        prior_precision: float = 1.0,
        bias_precision: float = 1.0,
        shared_precision: float = 1.0,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration must be one of {', '.join(EXPLORATIONS)}")
        if draws < 1 or posterior_scale < 0 or gamma_scale <= 0 or not 0 <= epsilon <= 1:
            raise ValueError("draws >= 1, posterior_scale >= 0, gamma_scale > 0, epsilon in [0,1]")
        if prior_precision <= 0 or noise <= 0:
            raise ValueError("prior_precision and noise must be > 0")
        self.exploration: Exploration = exploration
        self.draws = draws
        self.posterior_scale = posterior_scale
        self.gamma_scale = gamma_scale
        self.epsilon = epsilon
        self.prior_mean = prior_mean
        self.prior_precision = prior_precision
        self.bias_precision = bias_precision
        self.shared_precision = shared_precision
        self.noise = noise
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._slots: dict[str, int] = {}
        d = DIMENSION
        # Weights: a shared block (every model) then one block per model, in slot order.
        shared_prior = np.full(d, 1.0 / shared_precision)
        self._cov = np.diag(shared_prior)  # posterior covariance, in units of the noise variance
        self._xty = np.zeros(d)  # sum of z * (v - prior_mean)
        self._mean = np.zeros(d)
        self._sse = np.zeros(0)  # per model: sum of squared one-step-ahead residuals
        self._count = np.zeros(0)
        self._multiplier: Callable[[], float] = lambda: 0.0
        self._lam_at: OrderedDict[int, float] = OrderedDict()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "exploration": self.exploration,
            "draws": self.draws,
            "posterior_scale": self.posterior_scale,
            "gamma_scale": self.gamma_scale,
            "epsilon": self.epsilon,
            "prior_mean": self.prior_mean,
            "prior_precision": self.prior_precision,
            "bias_precision": self.bias_precision,
            "shared_precision": self.shared_precision,
            "noise": self.noise,
            "seed": self.seed,
        }

    def follow(self, multiplier: Callable[[], float]) -> None:
        """Price cost at ``multiplier()`` (e.g. ``lambda: pacer.lam`` of the router's pacer)."""
        self._multiplier = multiplier

    # -- state -------------------------------------------------------------------------------
    def _slot_indices(self, arms: Sequence[ModelSpec]) -> npt.NDArray[np.int64]:
        new = [arm.id for arm in arms if arm.id not in self._slots]
        if new:
            d = DIMENSION
            for arm_id in new:
                self._slots[arm_id] = len(self._slots)
            block = np.full(d, 1.0 / self.prior_precision)
            block[0] = 1.0 / self.bias_precision
            size = self._cov.shape[0]
            grown = np.zeros((size + d * len(new), size + d * len(new)))
            grown[:size, :size] = self._cov
            grown[size:, size:] = np.diag(np.tile(block, len(new)))
            self._cov = grown
            self._xty = np.concatenate([self._xty, np.zeros(d * len(new))])
            self._mean = np.concatenate([self._mean, np.zeros(d * len(new))])
            self._sse = np.concatenate([self._sse, np.zeros(len(new))])
            self._count = np.concatenate([self._count, np.zeros(len(new))])
        return np.array([self._slots[arm.id] for arm in arms], dtype=np.int64)

    @staticmethod
    def _cost_hat(context: PromptFeatures, arms: Sequence[ModelSpec]) -> npt.NDArray[np.float64]:
        return np.array([arm.price(context.tokens, arm.typical_output_tokens) for arm in arms])

    def _design(
        self, x: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """One row per arm: the features in the shared block and in the arm's own block."""
        d = DIMENSION
        z = np.zeros((len(slots), self._cov.shape[0]))
        z[:, :d] = x
        for row, slot in enumerate(slots):
            z[row, d * (1 + slot) : d * (2 + slot)] = x
        return z

    def _posterior(
        self, x: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Posterior mean and standard deviation of each arm's value at ``x``."""
        z = self._design(x, slots)
        mean = self.prior_mean + z @ self._mean
        noise_var = (NOISE_PSEUDO_COUNT * self.noise**2 + self._sse[slots]) / (
            NOISE_PSEUDO_COUNT + self._count[slots]
        )
        var = np.einsum("kd,kd->k", z @ self._cov, z) * noise_var
        return mean, np.sqrt(np.maximum(var, 0.0))

    # -- policy ------------------------------------------------------------------------------
    def _scores(
        self, context: PromptFeatures, arms: Sequence[ModelSpec]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        lam = float(self._multiplier())
        self._lam_at[id(context)] = lam
        if len(self._lam_at) > _REMEMBERED:
            self._lam_at.popitem(last=False)
        mean, sd = self._posterior(feature_vector(context), self._slot_indices(arms))
        return mean - lam * self._cost_hat(context, arms), sd

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        score, sd = self._scores(context, arms)
        k = len(arms)
        if self.exploration == "thompson":
            noise = self._rng.standard_normal((self.draws, k)) * (sd * self.posterior_scale)
            winners = np.argmax(score[None, :] + noise, axis=1)
            return np.bincount(winners, minlength=k).astype(np.float64) / self.draws
        best = int(np.argmax(score))
        if self.exploration == "epsilon":
            probs = np.full(k, self.epsilon / k)
            probs[best] += 1.0 - self.epsilon
            return probs
        gamma = self.gamma_scale * np.sqrt(self.updates + 1.0)
        probs = 1.0 / (k + gamma * (score[best] - score))
        probs[best] = 0.0
        probs[best] = max(0.0, 1.0 - probs.sum())
        return probs

    def best(self, context: PromptFeatures, arms: Sequence[ModelSpec], probs: Probabilities) -> int:
        score, _ = self._scores(context, arms)
        return int(np.argmax(score))

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        lam = self._lam_at.pop(id(context), None)
        if lam is None:
            lam = float(self._multiplier())
        value = reward + lam * float(self._cost_hat(context, arms[chosen : chosen + 1])[0])
        slot = int(self._slot_indices(arms[chosen : chosen + 1])[0])
        z = self._design(feature_vector(context), np.array([slot]))[0]
        residual = value - self.prior_mean - float(z @ self._mean)
        self._sse[slot] += residual**2
        self._count[slot] += 1
        # Sherman-Morrison update of (prior precision + Z'Z)^-1.
        cz = self._cov @ z
        self._cov -= np.outer(cz, cz) / (1.0 + z @ cz)
        self._xty += z * (value - self.prior_mean)
        self._mean = self._cov @ self._xty

    # -- snapshots ---------------------------------------------------------------------------
    def save(self) -> bytes:
        state: dict[str, Any] = {
            "settings": self.describe(),
            "slots": self._slots,
            "cov": self._cov,
            "xty": self._xty,
            "mean": self._mean,
            "sse": self._sse,
            "count": self._count,
            "updates": self.updates,
        }
        return pickle.dumps(state)

    def restore(self, data: bytes) -> None:
        try:
            state = pickle.loads(data)
            slots, cov, xty, mean = state["slots"], state["cov"], state["xty"], state["mean"]
        except Exception as exc:
            raise ValueError(f"not a valid costaware snapshot: {exc}") from exc
        if not isinstance(slots, dict) or cov.shape != (DIMENSION * (1 + len(slots)),) * 2:
            raise ValueError("not a valid costaware snapshot: wrong shapes")
        self._slots, self._cov, self._xty, self._mean = dict(slots), cov, xty, mean
        self._sse, self._count = state["sse"], state["count"]
        self.updates = int(state.get("updates", 0))
