"""The policy contract: a probability for every eligible model, and learning from rewards.

A policy sees the prompt's features and the eligible models (their catalogue entries, in a
fixed order) and returns a probability vector over exactly those models. The router samples
from it and logs the whole vector, so every policy must give honest probabilities, including
deterministic ones (a one-hot vector). Policies own their learning state and can serialise it
to bytes for snapshots. They never import grpc or duckdb.
"""

from __future__ import annotations

import functools
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures

Probabilities = npt.NDArray[np.float64]


class Policy(ABC):
    """Base class owning the shared mechanics: validation, greedy mode, counting, versioning."""

    name: str = "policy"

    def __init__(self) -> None:
        self.updates = 0

    @functools.cached_property
    def settings_key(self) -> str:
        """A short hash of the constructor settings, part of the version string."""
        return hashlib.sha1(repr(self.describe()).encode()).hexdigest()[:8]

    @property
    def version(self) -> str:
        """Identifies the policy, its settings and how much it has learned."""
        return f"{self.name}:{self.settings_key}:{self.updates}"

    def describe(self) -> dict[str, object]:
        """The settings the policy was built with (for logs and versions)."""
        return {"name": self.name}

    def distribution(
        self, context: PromptFeatures, arms: Sequence[ModelSpec], *, explore: bool = True
    ) -> Probabilities:
        """Probability of choosing each arm, aligned with ``arms``; sums to 1.

        With ``explore=False`` the policy exploits only: all mass on its best arm (used for
        requests that must not be explored, such as ones carrying personal data).
        """
        if not arms:
            raise ValueError("arms must not be empty")
        probs = np.asarray(self._distribution(context, arms), dtype=np.float64)
        total = float(probs.sum())
        if probs.shape != (len(arms),) or not math.isfinite(total) or float(probs.min()) < 0:
            raise RuntimeError(f"{self.name} returned an invalid distribution {probs!r}")
        probs = np.full(len(arms), 1.0 / len(arms)) if total <= 0 else probs / total
        if not explore:
            greedy = np.zeros(len(arms))
            greedy[self.best(context, arms, probs)] = 1.0
            return greedy
        return probs

    def best(self, context: PromptFeatures, arms: Sequence[ModelSpec], probs: Probabilities) -> int:
        """Index of the arm the policy rates highest (default: the most probable)."""
        return int(np.argmax(probs))

    def learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        """Update from the reward of arm ``chosen``, which was played with ``probability``."""
        if not 0 <= chosen < len(arms):
            raise ValueError(f"chosen index {chosen} outside 0..{len(arms) - 1}")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"probability {probability} outside (0, 1]")
        self._learn(context, arms, chosen, probability, reward)
        self.updates += 1

    def drift_counts(self) -> Mapping[str, int]:
        """Per model id, how often the policy detected drift and began re-learning it."""
        return {}

    def learn_logged(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        """Learn from a decision another (logging) policy made, e.g. a warm start from a log.

        ``probability`` is the logging policy's. Default: the same as :meth:`learn`; a policy
        whose exploration depends on how much it has explored may count such data differently.
        """
        self.learn(context, arms, chosen, probability, reward)

    @abstractmethod
    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        """Unnormalised non-negative scores or probabilities for each arm."""

    def _learn(  # noqa: B027 - deliberately a no-op default for stateless policies
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        """Learn from one reward (default: nothing to learn)."""

    def save(self) -> bytes:
        """Serialised learning state (empty for stateless policies)."""
        return b""

    def restore(self, data: bytes) -> None:
        """Load state written by :meth:`save`; ValueError if it is not a valid snapshot."""
        if data:
            raise ValueError(f"{self.name} keeps no state: expected an empty snapshot")
