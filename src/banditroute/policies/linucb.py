"""LinUCB baseline from river (``river.bandit.LinUCBDisjoint``) with epsilon mixing.

river's ``pull`` returns one arm, not a probability, and breaks ties at random (untrained arms
all tie), so this adapter computes the same upper confidence bounds itself and derives honest,
deterministic propensities: every eligible arm gets ``epsilon / K`` and the ``1 - epsilon``
rest is split evenly among the arms with the highest bound. Contexts are the dense numeric
view of the prompt features.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import numpy as np
from river import bandit

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy, Probabilities


class LinUCBPolicy(Policy):
    """Disjoint LinUCB (one ridge regression per model) with epsilon-uniform exploration."""

    name = "linucb"

    def __init__(self, alpha: float = 0.5, epsilon: float = 0.02, *, seed: int = 0) -> None:
        super().__init__()
        if alpha < 0 or not 0.0 <= epsilon <= 1.0:
            raise ValueError("alpha must be >= 0 and epsilon in [0, 1]")
        self.alpha = alpha
        self.epsilon = epsilon
        self.seed = seed
        self._model = bandit.LinUCBDisjoint(alpha=alpha, seed=seed)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "alpha": self.alpha, "epsilon": self.epsilon}

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        x = context.numeric()
        bounds = np.array([self._upper_bound(arm.id, x) for arm in arms])
        top = bounds.max()
        best = bounds >= top - 1e-12 * max(1.0, abs(top))
        probs = np.full(len(arms), self.epsilon / len(arms))
        probs[best] += (1.0 - self.epsilon) / best.sum()
        return probs

    def _upper_bound(self, arm_id: str, x: dict[str, float]) -> float:
        """The bound river's ``LinUCBDisjoint._pull`` maximises: posterior mean + one sigma."""
        model = self._model._bayes_lin_regs[arm_id]
        dist = model.predict_one(x, with_dist=True)  # type: ignore[no-untyped-call]
        return float(dist.mu + dist.sigma)

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        self._model.update(arms[chosen].id, context.numeric(), reward)  # type: ignore[no-untyped-call]

    def save(self) -> bytes:
        return pickle.dumps(self._model)

    def restore(self, data: bytes) -> None:
        try:
            model = pickle.loads(data)
        except Exception as exc:
            raise ValueError(f"not a valid LinUCB snapshot: {exc}") from exc
        if not isinstance(model, bandit.LinUCBDisjoint):
            raise ValueError("not a valid LinUCB snapshot")
        self._model = model
