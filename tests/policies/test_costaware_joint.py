"""The cost-aware policy's joint Thompson draws (``joint``): the models' values are drawn
together, so uncertainty they share (the shared block) moves them together instead of
counting as a reason to explore."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import extract
from banditroute.policies.costaware import (
    CostAwarePolicy,
    joint_thompson_probabilities,
    thompson_probabilities,
)

ARMS = (
    ModelSpec("a", "p", 0.1, 0.1),
    ModelSpec("b", "p", 1.0, 1.0),
    ModelSpec("c", "p", 5.0, 5.0),
)
SEEN = extract("What is the capital of France?")
UNSEEN = extract("```python\ndef f(x):\n    return x * 2\n```\nWhat does f(21) return? " * 8)


def test_joint_probabilities_match_monte_carlo() -> None:
    """Each arm's chance of the highest joint draw from ``N(mean, cov)`` is within 0.03 of a
    Monte Carlo estimate, the same every time, and an uncorrelated covariance gives what the
    independent draws give."""
    rng = np.random.default_rng(1)
    mean = rng.random(5) * 0.2
    root = rng.standard_normal((5, 5)) * 0.05
    cov = root @ root.T
    draws = rng.multivariate_normal(mean, cov, size=400_000)
    empirical = np.bincount(draws.argmax(axis=1), minlength=5) / len(draws)
    probs = joint_thompson_probabilities(mean, cov)
    np.testing.assert_allclose(probs, empirical, atol=0.03)
    np.testing.assert_array_equal(joint_thompson_probabilities(mean, cov), probs)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(
        joint_thompson_probabilities(mean, np.diag(sd**2)), thompson_probabilities(mean, sd),
        atol=0.03,
    )  # fmt: skip
    assert joint_thompson_probabilities(mean[:1], cov[:1, :1]).tolist() == [1.0]


def test_shared_uncertainty_alone_does_not_explore() -> None:
    """Two values with the same large uncertainty, perfectly correlated, are ranked by their
    means: the joint draw picks the better one every time, independent draws nearly halve."""
    mean = np.array([0.5, 0.6])
    cov = np.full((2, 2), 0.25)
    assert joint_thompson_probabilities(mean, cov).tolist() == [0.0, 1.0]
    assert thompson_probabilities(mean, np.sqrt(np.diag(cov)))[0] > 0.3


@pytest.mark.parametrize("price_prior", [0.0, 10.0])
def test_score_covariance_equals_the_dense_design_formula(price_prior: float) -> None:
    """The models' value covariance read with queued updates equals ``Z C Z'`` from the dense
    matrix over the whole design rows, and its diagonal is each model's own variance."""
    policy = CostAwarePolicy(price_prior=price_prior, joint=1.0, seed=0)
    for i in range(45):  # not a multiple of the flush interval: updates stay queued
        arm = i % 3
        policy.learn(SEEN if i % 2 else UNSEEN, ARMS, arm, 1 / 3, 0.5 + 0.2 * arm)
    slots = policy._slot_indices(ARMS)
    rows = np.ascontiguousarray(policy._rows(UNSEEN, slots))
    queued = policy._covariance.score_covariance(rows, slots)
    dense = policy._covariance.dense()
    d = policy._dim
    design = np.zeros((len(ARMS), dense.shape[0]))
    for k, slot in enumerate(slots):
        design[k, :d] = rows[k]
        design[k, d * (1 + slot) : d * (2 + slot)] = rows[k]
    np.testing.assert_allclose(queued, design @ dense @ design.T, atol=1e-12)
    np.testing.assert_allclose(
        np.diag(queued), policy._covariance.row_variances(rows, slots), atol=1e-12
    )


def test_joint_draws_explore_less_on_an_unfamiliar_prompt() -> None:
    """Trained on one kind of prompt (model c clearly best), the policy on a prompt with
    features it never saw is uncertain mostly in the shared block: with joint draws it keeps
    more probability on c than with independent draws, which it otherwise gives the others."""
    joint = CostAwarePolicy(joint=1.0, seed=0)
    independent = CostAwarePolicy(seed=0)
    for policy in (joint, independent):
        for i in range(300):
            arm = i % 3
            policy.learn(SEEN, ARMS, arm, 1 / 3, (0.3, 0.4, 0.8)[arm])
    assert joint.distribution(UNSEEN, ARMS)[2] > independent.distribution(UNSEEN, ARMS)[2] + 0.05
