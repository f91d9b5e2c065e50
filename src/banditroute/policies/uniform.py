"""Uniform random policy: every eligible model equally likely (pure exploration, a baseline)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy, Probabilities


class UniformPolicy(Policy):
    """Chooses uniformly among the eligible models; learns nothing.

    >>> from banditroute.catalog import ModelSpec
    >>> from banditroute.features import extract
    >>> arms = [ModelSpec("a", "p", 1, 1), ModelSpec("b", "p", 1, 1)]
    >>> UniformPolicy().distribution(extract("hi"), arms).tolist()
    [0.5, 0.5]
    """

    name = "uniform"

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        return np.full(len(arms), 1.0 / len(arms))
