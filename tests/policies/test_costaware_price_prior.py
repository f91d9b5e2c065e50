"""The cost-aware policy's pooled price prior (``price_prior``): a model's intercept is shrunk
toward a line in log price learned from every model's outcomes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import extract
from banditroute.policies.costaware import (
    PRICE_FEATURE_BOUND,
    SEMANTIC_DIMS,
    CostAwarePolicy,
    price_feature,
)

PROMPT = extract("Summarise the following paragraph in one sentence. " * 5)
# Eight models, each twice the price of the one before; quality rises with log price.
LADDER = tuple(ModelSpec(f"m{i}", "p", 0.1 * 2**i, 0.1 * 2**i) for i in range(8))
LADDER_QUALITY = np.linspace(0.2, 0.9, len(LADDER))


def _picks_of_best(price_prior: float, seed: int, prompts: int = 60) -> int:
    """How often a cold policy (no budget: quality is the reward) picks the best model in its
    first ``prompts`` decisions, sampling from its own distribution with 0/1 outcomes."""
    rng = np.random.default_rng(seed)
    policy = CostAwarePolicy(price_prior=price_prior, seed=seed)
    best = 0
    for _ in range(prompts):
        probs = policy.distribution(PROMPT, LADDER)
        arm = int(rng.choice(len(LADDER), p=probs))
        best += arm == len(LADDER) - 1
        outcome = float(rng.random() < LADDER_QUALITY[arm])
        policy.learn(PROMPT, LADDER, arm, float(probs[arm]), outcome)
    return best


def test_price_prior_finds_the_best_model_sooner_when_price_predicts_quality() -> None:
    """Where quality rises with price, outcomes of any model move the pooled line, so the cold
    policy with the price prior sends more of its first 60 prompts to the best (dearest) model
    than the same policy without it (same seeds)."""
    seeds = range(6)
    pooled = sum(_picks_of_best(10.0, seed) for seed in seeds)
    plain = sum(_picks_of_best(0.0, seed) for seed in seeds)
    assert pooled > plain + 30, (pooled, plain)


def test_price_prior_stays_bounded_with_adversarial_prices() -> None:
    """Free, absurdly dear and identical prices clip the regressor, and after many updates
    with extreme rewards every learned weight and every probability is finite and bounded."""
    assert price_feature(ModelSpec("free", "p", 0.0, 0.0)) == -PRICE_FEATURE_BOUND
    assert price_feature(ModelSpec("absurd", "p", 1e300, 1e300)) == PRICE_FEATURE_BOUND
    arms = (
        ModelSpec("free", "p", 0.0, 0.0),
        ModelSpec("absurd", "p", 1e300, 1e300),
        ModelSpec("twin-a", "p", 1.0, 1.0),
        ModelSpec("twin-b", "p", 1.0, 1.0),
    )
    policy = CostAwarePolicy(price_prior=100.0, seed=0)
    rng = np.random.default_rng(0)
    for i in range(400):
        probs = policy.distribution(PROMPT, arms)
        assert np.isfinite(probs).all()
        assert probs.sum() == pytest.approx(1.0)
        arm = i % len(arms)
        policy.learn(PROMPT, arms, arm, 0.25, float(rng.choice([-50.0, 50.0])))
    mean, _ = policy.value_estimates(PROMPT, arms)
    assert np.isfinite(mean).all()
    assert np.abs(policy._mean).max() < 100.0  # rewards are +-50: no weight runs away


def test_price_prior_snapshots_round_trip_and_refuse_other_shapes() -> None:
    """A snapshot keeps each model's price as first seen (a later price change does not move
    its learned value); a snapshot without the price column is refused with a clear error."""
    policy = CostAwarePolicy(price_prior=10.0, seed=0)
    for i in range(20):
        policy.learn(PROMPT, LADDER, i % len(LADDER), 0.125, float(LADDER_QUALITY[i % 8]))
    restored = CostAwarePolicy(price_prior=10.0, seed=0)
    restored.restore(policy.save())
    np.testing.assert_array_equal(
        restored.distribution(PROMPT, LADDER), policy.distribution(PROMPT, LADDER)
    )
    cut = (*LADDER[:-1], ModelSpec("m7", "p", 0.1, 0.1))  # the dearest model's price cut
    np.testing.assert_array_equal(
        restored.value_estimates(PROMPT, cut)[0], policy.value_estimates(PROMPT, LADDER)[0]
    )
    plain = CostAwarePolicy(seed=0)
    plain.learn(PROMPT, LADDER, 0, 0.125, 0.5)
    with pytest.raises(ValueError, match="snapshot"):
        restored.restore(plain.save())
    with np.load(io.BytesIO(policy.save()), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["arm_price"] = np.zeros(3)
    broken = io.BytesIO()
    np.savez(broken, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="snapshot"):
        restored.restore(broken.getvalue())


def test_price_prior_must_be_a_finite_non_negative_number() -> None:
    """A negative or infinite ``price_prior`` is refused at construction."""
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="price_prior"):
            CostAwarePolicy(price_prior=bad)


def test_config_keys_reach_the_policy_everywhere_it_is_built() -> None:
    """``[policy] price_prior`` and ``joint_thompson`` reach the cost-aware policy the server,
    the simulator and replay build (all through one builder), and all three read the same
    number of embedding components; the defaults leave both options off."""
    from banditroute.config import settings_from_mapping
    from banditroute.evaluation.candidates import build_policy as build_candidate
    from banditroute.evaluation.candidates import parse_candidate
    from banditroute.policies.factory import build_policy as build_served
    from banditroute.simulation import build_policy as build_simulated

    default = settings_from_mapping({})
    assert (default.policy.price_prior, default.policy.joint_thompson) == (0.0, False)
    settings = settings_from_mapping({"policy": {"price_prior": 7.5, "joint_thompson": True}})
    built = [
        build_served(settings.policy, semantic=settings.features.semantic),
        build_simulated("costaware", settings, seed=0),
        build_candidate(parse_candidate("costaware"), settings, seed=0),
    ]
    for policy in built:
        assert isinstance(policy, CostAwarePolicy)
        assert (policy.price_prior, policy.joint) == (7.5, True)
        assert policy.semantic_dims == SEMANTIC_DIMS
