"""SharedLearning (the multi-process wrapper) must be invisible to snapshots and versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from banditroute.config import Settings
from banditroute.features import extract
from banditroute.policies.base import Policy
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.linucb import LinUCBPolicy
from banditroute.policies.sharing import SharedLearning
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
