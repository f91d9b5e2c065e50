"""The latency model and the bandit interface of the replay environment."""

from __future__ import annotations

import numpy as np
import pytest

from banditroute.simulation.environment import LatencyModel, ReplayEnvironment


def test_latency_noise_keeps_the_prior_mean_and_is_reproducible() -> None:
    """Lognormal noise on both terms leaves the mean at ttft + tokens / speed; a seed gives
    the same draws, another seed other draws."""
    model = LatencyModel(ttft_ms=(500.0, 200.0), tokens_per_s=(50.0, 100.0))
    tokens = np.full((40_000, 2), 100.0)
    expected = model.expected(tokens)
    np.testing.assert_allclose(expected[0], [2500.0, 1200.0])
    sample = model.sample(tokens, seed=1)
    np.testing.assert_allclose(sample.mean(axis=0), expected[0], rtol=0.01)
    assert np.all(sample > 0)
    np.testing.assert_array_equal(model.sample(tokens, seed=1), sample)
    assert not np.array_equal(model.sample(tokens, seed=2), sample)


def test_reveal_returns_one_cell_and_counts_it() -> None:
    """reveal() gives exactly the asked (prompt, model) cell and counts every call."""
    quality = np.array([[1.0, 0.0], [0.5, 0.25]])
    cost = np.array([[0.1, 0.2], [0.3, 0.4]])
    env = ReplayEnvironment(quality, cost, cost * 1000, cost * 10)
    outcome = env.reveal(1, 0)
    assert (outcome.quality, outcome.cost_usd) == (0.5, pytest.approx(0.3))
    assert outcome.latency_ms == pytest.approx(300.0)
    assert env.revealed == 1
    env.reveal(0, 1)
    assert env.revealed == 2
