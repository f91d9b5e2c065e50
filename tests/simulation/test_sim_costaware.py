"""The cost-aware policy: honest deterministic probabilities, pricing at the pacer's multiplier,
snapshots, and the Thompson integral."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import extract
from banditroute.policies.costaware import (
    NOISE_PSEUDO_COUNT,
    CostAwarePolicy,
    feature_vector,
    thompson_probabilities,
)

ARMS = (
    ModelSpec("cheap", "p", 0.1, 0.1, typical_output_tokens=100),
    ModelSpec("dear", "p", 10.0, 30.0, typical_output_tokens=100),
)
PROMPT = extract("Solve for x: 3x + 5 = 20. " * 20)


def _train(policy: CostAwarePolicy, rounds: int = 60) -> None:
    """The dear model is a bit better (0.9 vs 0.8 quality, the reward is quality only)."""
    for i in range(rounds):
        arm = i % 2
        policy.learn(PROMPT, ARMS, arm, 0.5, 0.9 if arm else 0.8)


def test_thompson_probabilities_match_monte_carlo() -> None:
    """The fixed stratified draws give each arm's chance of the highest posterior draw within
    0.03 (their resolution is 1/1024), and the same vector every time."""
    rng = np.random.default_rng(0)
    mean = rng.random(6) * 0.3
    sd = rng.random(6) * 0.1 + 0.001
    draws = mean + sd * rng.standard_normal((400_000, 6))
    empirical = np.bincount(draws.argmax(axis=1), minlength=6) / len(draws)
    np.testing.assert_allclose(thompson_probabilities(mean, sd), empirical, atol=0.03)
    np.testing.assert_array_equal(
        thompson_probabilities(mean, sd), thompson_probabilities(mean, sd)
    )
    assert thompson_probabilities(mean, np.zeros(6)).tolist() == (mean == mean.max()).tolist()
    assert thompson_probabilities(np.array([0.3]), np.array([0.1])).tolist() == [1.0]


def test_distribution_is_deterministic_in_the_learned_state() -> None:
    """Asking twice gives the same vector: what the router logs is what it samples from."""
    policy = CostAwarePolicy(seed=3)
    _train(policy, 10)
    first = policy.distribution(PROMPT, ARMS)
    np.testing.assert_array_equal(policy.distribution(PROMPT, ARMS), first)
    assert first.sum() == pytest.approx(1.0)


def test_a_higher_multiplier_moves_choice_to_the_cheaper_model() -> None:
    """With no multiplier the better (dear) model wins; a multiplier that prices the cost
    difference above the quality difference moves the choice to the cheap one, without
    relearning: the value model itself is price-free."""
    lam = {"value": 0.0}
    policy = CostAwarePolicy(posterior_scale=0.0, seed=0)
    policy.follow(lambda: lam["value"])
    _train(policy)
    assert policy.distribution(PROMPT, ARMS, explore=False).tolist() == [0.0, 1.0]
    cost_gap = ARMS[1].price(PROMPT.tokens, 100) - ARMS[0].price(PROMPT.tokens, 100)
    lam["value"] = 2 * 0.1 / cost_gap
    assert policy.distribution(PROMPT, ARMS, explore=False).tolist() == [1.0, 0.0]


def test_rewards_priced_at_the_decision_multiplier_are_learned_price_free() -> None:
    """A reward that includes ``-lam * cost`` at decision time is credited back, so the value
    learned equals the one learned from the unpriced reward."""
    lam = {"value": 40.0}
    priced = CostAwarePolicy(seed=0)
    priced.follow(lambda: lam["value"])
    plain = CostAwarePolicy(seed=0)
    for i in range(40):
        arm = i % 2
        quality = 0.9 if arm else 0.8
        cost = ARMS[arm].price(PROMPT.tokens, 100)
        priced.distribution(PROMPT, ARMS)  # remembers the multiplier of this decision
        lam["value"] += 1.0  # the pacer moves before the reward arrives
        priced.learn(PROMPT, ARMS, arm, 0.5, quality - (lam["value"] - 1.0) * cost)
        plain.learn(PROMPT, ARMS, arm, 0.5, quality)
    lam["value"] = 0.0
    np.testing.assert_allclose(
        priced.distribution(PROMPT, ARMS), plain.distribution(PROMPT, ARMS), atol=1e-9
    )


@pytest.mark.parametrize("exploration", ["thompson", "squarecb", "epsilon"])
def test_save_restore_round_trip_and_garbage(exploration: str) -> None:
    """A restored snapshot decides exactly like the original; garbage raises ValueError."""
    policy = CostAwarePolicy(exploration=exploration, seed=1)  # type: ignore[arg-type]
    _train(policy, 20)
    restored = CostAwarePolicy(exploration=exploration, seed=1)  # type: ignore[arg-type]
    restored.restore(policy.save())
    np.testing.assert_array_equal(
        restored.distribution(PROMPT, ARMS), policy.distribution(PROMPT, ARMS)
    )
    assert restored.updates == policy.updates
    with pytest.raises(ValueError, match="snapshot"):
        restored.restore(b"not a snapshot")


def test_invalid_settings_are_rejected() -> None:
    """Unknown exploration or non-positive priors are errors at construction."""
    with pytest.raises(ValueError, match="exploration"):
        CostAwarePolicy(exploration="greedy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="precision"):
        CostAwarePolicy(prior_precision=0.0)


def test_logged_updates_learn_the_same_values_and_explore_less() -> None:
    """``learn_logged`` learns exactly what ``learn`` does, but advances the exploration clock
    by the inverse logging probability, so Thompson sampling afterwards explores less; the
    credit survives a snapshot."""
    own = CostAwarePolicy(scale_halflife=10.0, seed=0)
    logged = CostAwarePolicy(scale_halflife=10.0, seed=0)
    for i in range(30):
        arm = i % 2
        own.learn(PROMPT, ARMS, arm, 0.25, 0.9 if arm else 0.87)
        logged.learn_logged(PROMPT, ARMS, arm, 0.25, 0.9 if arm else 0.87)
    np.testing.assert_allclose(
        logged.value_estimates(PROMPT, ARMS)[0], own.value_estimates(PROMPT, ARMS)[0]
    )
    assert own.updates == logged.updates == 30
    assert (own.clock, logged.clock) == (30.0, 120.0)
    explored = own.distribution(PROMPT, ARMS)
    narrower = logged.distribution(PROMPT, ARMS)
    assert 0.5 < explored[1] < narrower[1] < 1.0
    restored = CostAwarePolicy(scale_halflife=10.0, seed=0)
    restored.restore(logged.save())
    assert restored.clock == 120.0
    np.testing.assert_array_equal(restored.distribution(PROMPT, ARMS), narrower)


def test_snapshot_without_logged_credit_still_restores() -> None:
    """A snapshot written before the exploration clock existed restores with no credit."""
    import io

    policy = CostAwarePolicy(seed=0)
    _train(policy, 10)
    with np.load(io.BytesIO(policy.save()), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "logged_credit"}
    old = io.BytesIO()
    np.savez(old, **arrays)  # type: ignore[arg-type]
    restored = CostAwarePolicy(seed=0)
    restored.restore(old.getvalue())
    assert restored.clock == restored.updates == 10
    np.testing.assert_array_equal(
        restored.distribution(PROMPT, ARMS), policy.distribution(PROMPT, ARMS)
    )


def test_block_posterior_equals_the_dense_design_formula() -> None:
    """The posterior read from the shared and own blocks equals the dense formula over the
    whole design row (x in the shared block and the arm's block, zeros elsewhere)."""
    policy = CostAwarePolicy(seed=0)
    _train(policy, 30)
    x = feature_vector(PROMPT)
    d = len(x)
    mean, sd = policy._posterior(PROMPT, policy._slot_indices(ARMS))
    for k, arm in enumerate(ARMS):
        slot = policy._slots[arm.id]
        z = np.zeros(policy._covariance.dense().shape[0])
        z[:d] = x
        z[d * (1 + slot) : d * (2 + slot)] = x
        noise_var = (NOISE_PSEUDO_COUNT * policy.noise**2 + policy._sse[slot]) / (
            NOISE_PSEUDO_COUNT + policy._count[slot]
        )
        assert mean[k] == pytest.approx(policy.prior_mean + z @ policy._mean)
        assert sd[k] == pytest.approx(np.sqrt(z @ policy._covariance.dense() @ z * noise_var))


def test_semantic_dimensions_read_the_embedding() -> None:
    """With semantic_dims, the first components of the prompt's embedding join the features
    (zeros when the prompt has none, and for the components a shorter one lacks), as float64
    after the numeric ones, and two prompts differing only there are told apart."""
    plain = dataclasses.replace(PROMPT, embedding=())
    tagged = dataclasses.replace(PROMPT, embedding=(0.5, -0.25, 0.1))
    assert feature_vector(plain, 2)[-2:].tolist() == [0.0, 0.0]
    assert feature_vector(tagged, 2)[-2:].tolist() == [0.5, -0.25]
    padded = feature_vector(tagged, 5)
    assert padded.dtype == np.float64
    assert padded.shape == (len(feature_vector(PROMPT)) + 5,)
    assert padded[-5:].tolist() == [0.5, -0.25, 0.1, 0.0, 0.0]
    assert padded[:-5].tolist() == feature_vector(PROMPT).tolist()
    policy = CostAwarePolicy(seed=0, semantic_dims=2)
    for _ in range(200):
        policy.learn(tagged, ARMS, 0, 0.5, 0.9)
        policy.learn(tagged, ARMS, 1, 0.5, 0.1)
        policy.learn(plain, ARMS, 0, 0.5, 0.1)
        policy.learn(plain, ARMS, 1, 0.5, 0.9)
    assert policy.distribution(tagged, ARMS, explore=False).tolist() == [1.0, 0.0]
    assert policy.distribution(plain, ARMS, explore=False).tolist() == [0.0, 1.0]


def test_recursive_mean_equals_the_batch_posterior_mean() -> None:
    """The mean updated one observation at a time equals the batch Bayesian solution
    ``(P0 + Z'Z)^-1 Z'(v - prior_mean)`` over every update (no policy state besides the
    covariance and the mean is needed to keep it)."""
    policy = CostAwarePolicy(drift_delta=0.0, seed=0)
    rng = np.random.default_rng(4)
    prompts = [extract(f"Question {i}: what is {i} * 3? Answer A or B.") for i in range(6)]
    rows, values = [], []
    for step in range(80):
        context = prompts[step % len(prompts)]
        chosen = int(rng.integers(len(ARMS)))
        value = float(rng.random())
        policy.learn(context, ARMS, chosen, 0.5, value)
        x = feature_vector(context)
        z = np.zeros(policy._covariance.dense().shape[0])
        d = len(x)
        slot = policy._slots[ARMS[chosen].id]
        z[:d] = x
        z[d * (1 + slot) : d * (2 + slot)] = x
        rows.append(z)
        values.append(value - policy.prior_mean)
    d = len(feature_vector(prompts[0]))
    prior = np.full(d, 1.0 / policy.shared_precision)
    own = np.full(d, 1.0 / policy.prior_precision)
    own[0] = 1.0 / policy.bias_precision
    precision = np.diag(1.0 / np.concatenate([prior, own, own]))
    design = np.array(rows)
    batch = np.linalg.solve(precision + design.T @ design, design.T @ np.array(values))
    np.testing.assert_allclose(policy._mean, batch, atol=1e-8)
