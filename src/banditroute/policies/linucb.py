"""LinUCB baseline from river (``river.bandit.LinUCBDisjoint``) with epsilon mixing.

river's ``pull`` returns one arm, not a probability, so this adapter derives honest
propensities: the UCB arm gets ``1 - epsilon + epsilon / K`` and every other eligible arm
``epsilon / K``. Contexts are the dense numeric view of the prompt features.
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
        ids = [arm.id for arm in arms]
        chosen = self._model.pull(ids, context=context.numeric())
        probs = np.full(len(arms), self.epsilon / len(arms))
        probs[ids.index(chosen)] += 1.0 - self.epsilon
        return probs

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        self._model.update(arms[chosen].id, context.numeric(), reward)

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
