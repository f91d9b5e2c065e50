"""A cost-aware snapshot carried across the semantic features being turned on or off: what every
model learned is kept (the upgrade that turned the features on by default must not throw a
deployment's learning away), and a snapshot that fits no layout is still refused."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures, extract
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy
from banditroute.snapshots import load_snapshot, save_snapshot

ARMS = tuple(ModelSpec(f"m{i}", "p", 0.2 * (i + 1), 0.4 * (i + 1)) for i in range(3))
PROMPTS = (
    "Write a python function that reverses a linked list.",
    "What is the capital of Australia?",
    "Solve 3x + 7 = 22 for x and explain each step.",
    "Translate 'good morning' into French.",
)


def _embedded(features: PromptFeatures, rng: np.random.Generator) -> PromptFeatures:
    """The features with a random unit embedding of SEMANTIC_DIMS components."""
    vector = rng.normal(size=SEMANTIC_DIMS)
    embedding = tuple(round(float(v), 4) for v in vector / np.linalg.norm(vector))
    return dataclasses.replace(features, embedding=embedding)


def _train(policy: CostAwarePolicy, *, embed: bool, seed: int = 0) -> None:
    """Forty decisions and rewards over the prompts and arms (random embeddings if asked)."""
    rng = np.random.default_rng(seed)
    for step in range(40):
        features = extract(PROMPTS[step % len(PROMPTS)])
        if embed:
            features = _embedded(features, rng)
        probabilities = policy.distribution(features, ARMS)
        arm = int(rng.choice(len(ARMS), p=probabilities))
        policy.learn(features, ARMS, arm, float(probabilities[arm]), float(rng.random()))


def test_a_snapshot_without_semantic_features_becomes_one_that_reads_them() -> None:
    """A snapshot of a policy that read no embedding, restored into one reading 16 components,
    is exactly the policy that learned the same outcomes with a zero embedding: the same
    posterior (mean and covariance) and the same distribution on every prompt."""
    before = CostAwarePolicy(seed=0)
    _train(before, embed=False)
    upgraded = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    upgraded.restore(before.save())
    upgraded.updates = before.updates
    zero_all_along = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    _train(zero_all_along, embed=False)
    np.testing.assert_allclose(upgraded._mean, zero_all_along._mean, atol=1e-12)
    np.testing.assert_allclose(
        upgraded._covariance.dense(), zero_all_along._covariance.dense(), atol=1e-12
    )
    for prompt in PROMPTS:
        features = extract(prompt)
        np.testing.assert_allclose(
            upgraded.distribution(features, ARMS), zero_all_along.distribution(features, ARMS)
        )


def test_turning_semantic_features_off_keeps_what_the_dense_weights_learned() -> None:
    """A snapshot of a policy that read 16 components, restored into one reading none, gives
    every prompt without an embedding the same value estimates and spread as before (the
    embedding weights are marginalised out, not the snapshot thrown away)."""
    before = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    _train(before, embed=True)
    plain = CostAwarePolicy(seed=0)
    plain.restore(before.save())
    for prompt in PROMPTS:
        features = extract(prompt)
        slots = before._slot_indices(ARMS)
        np.testing.assert_allclose(
            plain._posterior(features, plain._slot_indices(ARMS)),
            before._posterior(features, slots),
            atol=1e-12,
        )


def test_a_snapshot_that_fits_no_layout_is_refused() -> None:
    """A covariance one weight short of any layout, or a snapshot that says it read more
    components than its weights hold, is a ValueError naming the snapshot."""
    policy = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    _train(policy, embed=True)
    with np.load(io.BytesIO(policy.save()), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for change in (
        {"cov": arrays["cov"][:-1, :-1], "mean": arrays["mean"][:-1]},
        {"semantic_dims": np.array(SEMANTIC_DIMS + 1)},
    ):
        broken = io.BytesIO()
        np.savez(broken, **{**arrays, **change})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="snapshot"):
            CostAwarePolicy(seed=0).restore(broken.getvalue())


def test_a_server_snapshot_from_before_the_default_changed_is_restored(tmp_path: Path) -> None:
    """The snapshot file a server wrote with the semantic features off is restored (not moved
    aside as corrupt) by the default policy, which now reads them, with its update count."""
    before = CostAwarePolicy(seed=0)
    _train(before, embed=False)
    path = tmp_path / "policy.snapshot"
    save_snapshot(before, path)
    after = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    assert load_snapshot(after, path)
    assert after.updates == before.updates == 40
    assert path.exists()
    assert not path.with_name(path.name + ".corrupt").exists()
