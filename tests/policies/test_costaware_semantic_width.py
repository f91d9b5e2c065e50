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


def _without_markers(state: bytes, **change: np.ndarray) -> bytes:
    """A snapshot as a build before the layout markers wrote it (and ``change`` applied)."""
    with np.load(io.BytesIO(state), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k not in ("semantic_dims", "priced")}
    out = io.BytesIO()
    np.savez(out, **{**arrays, **change})  # type: ignore[arg-type]
    return out.getvalue()


def test_an_older_snapshot_of_another_price_prior_setting_is_still_refused() -> None:
    """Without the layout markers a snapshot is read by its width, and only as 0 or 16
    embedding components: a price-prior snapshot is not taken for one with an embedding
    weight in its price column (nor the reverse), whatever the policy reads."""
    priced = CostAwarePolicy(seed=0, price_prior=10.0)
    _train(priced, embed=False)
    for dims in (0, SEMANTIC_DIMS):
        with pytest.raises(ValueError, match="snapshot"):
            CostAwarePolicy(seed=0, semantic_dims=dims).restore(_without_markers(priced.save()))
    plain = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    _train(plain, embed=True)
    with pytest.raises(ValueError, match="snapshot"):
        CostAwarePolicy(seed=0, price_prior=10.0).restore(_without_markers(plain.save()))
    carried = CostAwarePolicy(seed=0)
    carried.restore(_without_markers(plain.save()))  # 16 components, unpriced: still carried
    assert carried._slots == plain._slots


def test_a_malformed_snapshot_is_refused_and_leaves_the_policy_as_it_was() -> None:
    """A scalar mean or a per-model count of the wrong length is a ValueError naming the
    snapshot (never a TypeError past load_snapshot's guard), and the policy restoring it keeps
    its own state untouched."""
    source = CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS)
    _train(source, embed=True)
    target = CostAwarePolicy(seed=1, semantic_dims=SEMANTIC_DIMS)
    _train(target, embed=True, seed=1)
    before = (target._mean.copy(), target._covariance.dense().copy(), dict(target._slots))
    for change in ({"mean": np.array(1.0)}, {"count": np.zeros(7)}, {"born": np.zeros(2)}):
        with pytest.raises(ValueError, match="snapshot"):
            target.restore(_without_markers(source.save(), **change))
        np.testing.assert_array_equal(target._mean, before[0])
        np.testing.assert_array_equal(target._covariance.dense(), before[1])
        assert target._slots == before[2]


def test_replay_refuses_a_snapshot_of_another_embedding_width(tmp_path: Path) -> None:
    """A ``snapshot:PATH`` replay candidate is scored as it was saved: a cost-aware snapshot
    written with the semantic features off, replayed under settings that have them on, is an
    InvalidArgument asking whether --config matches, not a silently carried policy; a
    server's own restart still carries it, with a warning in the log."""
    from structlog.testing import capture_logs

    from banditroute.config import settings_from_mapping
    from banditroute.errors import InvalidArgument
    from banditroute.evaluation.candidates import load_policy, parse_candidate

    before = CostAwarePolicy(seed=0)
    _train(before, embed=False)
    path = tmp_path / "policy.snapshot"
    save_snapshot(before, path)
    with pytest.raises(InvalidArgument, match="does --config match"):
        load_policy(parse_candidate(f"snapshot:{path}"), settings_from_mapping({}))
    assert path.exists()
    with capture_logs() as logs:
        assert load_snapshot(CostAwarePolicy(seed=0, semantic_dims=SEMANTIC_DIMS), path)
    carried = [e for e in logs if e["event"] == "snapshot_semantic_width_carried"]
    assert [e["log_level"] for e in carried] == ["warning"]
