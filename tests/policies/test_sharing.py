"""SharedLearning (the multi-process wrapper) must be invisible to snapshots and versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from banditroute.config import Settings
from banditroute.features import PromptFeatures, extract, features_from_dict
from banditroute.policies import sharing
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.policies.sharing import SharedLearning, SharedUpdate, learn_update
from banditroute.policies.vw import VWPolicy
from banditroute.snapshots import load_snapshot, save_snapshot


@pytest.mark.parametrize(
    "build",
    [lambda: VWPolicy(seed=3), lambda: LinUCBPolicy(seed=3), lambda: CostAwarePolicy(seed=3)],
    ids=["vw", "linucb", "costaware"],
)
def test_snapshot_of_a_shared_policy_keeps_its_update_count(
    build: Callable[[], Policy], default_settings: Settings, tmp_path: Path
) -> None:
    """A worker's snapshot (its policy wrapped in SharedLearning) restores the update count:
    the version goes on from where it stood and costaware's exploration clock is not reset
    to its start (it was written as 0, the wrapper's own never-incremented counter)."""
    arms = tuple(default_settings.catalog)[:4]
    context = extract("What is the capital of France?")
    shared = SharedLearning(build())
    for i in range(7):
        shared.learn(context, arms, i % 4, 0.25, 1.0 if i % 4 == 1 else 0.0)
    assert shared.inner.updates == 7
    path = tmp_path / "default.snap"
    save_snapshot(shared, path)
    restored = build()
    assert load_snapshot(restored, path)
    assert restored.updates == 7
    assert restored.version == shared.version
    np.testing.assert_array_equal(
        restored.distribution(context, arms), shared.distribution(context, arms)
    )


def test_updates_of_another_lineage_are_not_learned(default_settings: Settings) -> None:
    """Merge rounds around a promotion: updates a process made with the configured policy
    are not learned by a process already serving a promoted one, nor the reverse; updates of
    the same lineage are."""
    arms = tuple(default_settings.catalog)[:4]
    context = extract("What is the capital of France?")
    configured, promoted = (
        SharedLearning(LinUCBPolicy(seed=3)),
        SharedLearning(LinUCBPolicy(seed=3), "change-1"),
    )
    configured.learn(context, arms, 1, 0.25, 1.0)
    promoted.learn(context, arms, 2, 0.25, 1.0)
    from_configured, from_promoted = configured.take_updates(), promoted.take_updates()
    assert from_promoted[0].lineage == "change-1"
    catalog = default_settings.catalog
    assert promoted.learn_shared(from_configured, catalog) == 0
    assert configured.learn_shared(from_promoted, catalog) == 0
    assert promoted.inner.updates == configured.inner.updates == 1
    same = SharedLearning(LinUCBPolicy(seed=3), "change-1")
    assert same.learn_shared(from_promoted, catalog) == 1


def test_a_checked_update_is_learned_without_reading_its_features_again(
    default_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's update is checked on arrival (its features read and validated) and
    learned with the features read there, not read a second time; an update made in this
    process (no features read yet) is read when learned."""
    arms = tuple(default_settings.catalog)[:4]
    context = extract("What is the capital of France?")
    reads: list[int] = []

    def counted(data: Any) -> PromptFeatures:
        reads.append(1)
        return features_from_dict(data)

    monkeypatch.setattr(sharing, "features_from_dict", counted)
    made = SharedUpdate(context.as_dict(), tuple(a.id for a in arms), 1, 0.25, 1.0, "d1")
    update = SharedUpdate.from_dict(made.as_dict())
    assert update == made
    assert update.context == context
    policy = LinUCBPolicy(seed=3)
    assert learn_update(policy, update, default_settings.catalog)
    assert len(reads) == 1
    assert learn_update(policy, made, default_settings.catalog)
    assert len(reads) == 2
    assert policy.updates == 2
