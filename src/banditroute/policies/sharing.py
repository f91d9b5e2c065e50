"""Sharing what a policy learns with the other serving processes (example sharing).

:class:`SharedLearning` wraps any policy and records every update it makes; a merge round
sends each process's recorded updates to every other process, which learns them too. Every
process then learns from all feedback, whatever the policy kind, and ends each round with a
model equivalent to a single learner's that saw the same updates in another order. (Merging
VW weight deltas instead was measured worse than not merging at all on RouterBench; see
benchmarks/README.md.) An update is small: the prompt's features, the eligible model ids, the
chosen index, its probability and the reward.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditroute.catalog import Catalog, ModelSpec
from banditroute.features import PromptFeatures, features_from_dict
from banditroute.policies.base import Policy, Probabilities
from banditroute.rewards import MAX_LEARNED_REWARD


@dataclass(frozen=True)
class SharedUpdate:
    """One learning update, in plain data that pickles small."""

    features: dict[str, Any]
    arms: tuple[str, ...]
    chosen: int
    probability: float
    reward: float
    decision_id: str = ""
    """The decision learned from ("" if not known): the cluster's trainer learns each
    decision once, whichever replica's feedback reaches it first."""
    lineage: str = ""
    """Which policy learned it: "" the configured one, else the promotion that made it live
    (:class:`SharedLearning`). A process serving another (a promotion or rollback reached it
    first, or not yet) does not learn it."""
    context: PromptFeatures | None = field(default=None, compare=False, repr=False)
    """``features`` already read (:func:`~banditroute.features.features_from_dict`), when
    the update was checked on arrival: learned without reading them again."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the cluster ships updates as JSON lines)."""
        data: dict[str, Any] = {
            "features": self.features, "arms": list(self.arms), "chosen": self.chosen,
            "probability": self.probability, "reward": self.reward,
        }  # fmt: skip
        if self.decision_id:
            data["d"] = self.decision_id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SharedUpdate:
        """The update :meth:`as_dict` gave; ValueError if ``data`` is not one (another
        process's data is checked before it reaches a learner: features as
        :func:`~banditroute.features.features_from_dict` reads them, a finite reward)."""
        try:
            features, arms = data["features"], tuple(data["arms"])
            chosen, probability = int(data["chosen"]), float(data["probability"])
            reward = float(data["reward"])
            decision_id = str(data.get("d", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed learning update: {type(exc).__name__}") from None
        if not isinstance(features, dict) or not all(isinstance(a, str) for a in arms):
            raise ValueError("malformed learning update: features or arms")
        if not 0 <= chosen < len(arms) or not 0.0 < probability <= 1.0:
            raise ValueError("malformed learning update: chosen or probability")
        if not math.isfinite(reward) or abs(reward) > MAX_LEARNED_REWARD:
            # A replica clips what it learns to MAX_LEARNED_REWARD (rewards.learnable): a
            # larger one is damaged or forged, and squared in a learner it overflows.
            raise ValueError("malformed learning update: reward")
        try:
            context = features_from_dict(features)
        except ValueError as exc:
            raise ValueError(f"malformed learning update: {exc}") from None
        return cls(features, arms, chosen, probability, reward, decision_id[:64], context=context)


def learn_update(policy: Policy, update: SharedUpdate, catalog: Catalog) -> bool:
    """Teach ``policy`` one shared update; False (nothing learned) if it names a model the
    catalogue lacks."""
    if any(model not in catalog for model in update.arms):
        return False
    arms = [catalog.get(model) for model in update.arms]
    context = update.context if update.context is not None else features_from_dict(update.features)
    policy.learn(context, arms, update.chosen, update.probability, update.reward)
    return True


class SharedLearning(Policy):
    """A policy whose updates are also recorded for the other processes."""

    def __init__(self, inner: Policy, lineage: str = "") -> None:
        # No super().__init__(): ``updates`` is the inner policy's count (see below).
        self.inner = inner
        self.lineage = lineage
        """"" for the configured policy, or the id of the promotion that made it live: every
        process serving the same policy has the same lineage, and learns only its updates."""
        self.name = inner.name
        self._outbox: list[SharedUpdate] = []
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return self.inner.version

    @property
    def updates(self) -> int:
        """The inner policy's update count (what a snapshot records and restores)."""
        return self.inner.updates

    @updates.setter
    def updates(self, value: int) -> None:
        self.inner.updates = value

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    def drift_counts(self) -> Mapping[str, int]:
        return self.inner.drift_counts()

    def distribution(
        self, context: PromptFeatures, arms: Sequence[ModelSpec], *, explore: bool = True
    ) -> Probabilities:
        return self.inner.distribution(context, arms, explore=explore)

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        return self.inner.distribution(context, arms)

    def learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        self.inner.learn(context, arms, chosen, probability, reward)
        update = SharedUpdate(
            context.as_dict(), tuple(a.id for a in arms), chosen, probability, reward,
            lineage=self.lineage,
        )  # fmt: skip
        with self._lock:
            self._outbox.append(update)

    def take_updates(self) -> list[SharedUpdate]:
        """The updates made since the last call (and forget them)."""
        with self._lock:
            updates, self._outbox = self._outbox, []
        return updates

    def learn_shared(self, updates: Sequence[SharedUpdate], catalog: Catalog) -> int:
        """Learn other processes' updates (not recorded again); returns how many were learned.
        Updates naming a model this catalogue lacks, or learned by another policy (of another
        lineage: around a promotion or rollback), are skipped."""
        return sum(
            learn_update(self.inner, update, catalog)
            for update in updates
            if update.lineage == self.lineage
        )

    def save(self) -> bytes:
        return self.inner.save()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)
