"""Fixed-model policy: always the configured model when it is eligible (a baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy, Probabilities


class FixedPolicy(Policy):
    """All probability on ``model``; when it is not eligible, on the first eligible model.

    >>> from banditroute.catalog import ModelSpec
    >>> from banditroute.features import extract
    >>> arms = [ModelSpec("a", "p", 1, 1), ModelSpec("b", "p", 1, 1)]
    >>> FixedPolicy("b").distribution(extract("hi"), arms).tolist()
    [0.0, 1.0]
    """

    name = "fixed"

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "model": self.model}

    @property
    def version(self) -> str:
        return f"fixed:{self.model}"

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        probs = np.zeros(len(arms))
        ids = [arm.id for arm in arms]
        probs[ids.index(self.model) if self.model in ids else 0] = 1.0
        return probs
