"""The cost-aware policy's block covariance (queued rank-one updates, per-model combined blocks)
decides exactly as the textbook dense recursive least squares it replaced."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from banditroute.catalog import ModelSpec
from banditroute.features import PromptFeatures
from banditroute.policies.costaware import SEMANTIC_DIMS, CostAwarePolicy

STEPS = 900
"""Long enough for many queue flushes, a model added at a third and a drift after a half."""


class _DenseCovariance:
    """Reference: the whole covariance, each update applied at once as ``C -= g (Cz)'`` and each
    variance read as ``z' C z`` over the full design row."""

    def __init__(self, dim: int, shared_prior: npt.NDArray[np.float64]) -> None:
        self.dim = dim
        self.matrix = np.diag(shared_prior)

    def _row(self, x: npt.NDArray[np.float64], slot: int) -> npt.NDArray[np.float64]:
        z = np.zeros(self.matrix.shape[0])
        z[: self.dim] = x
        z[self.dim * (1 + slot) : self.dim * (2 + slot)] = x
        return z

    def dense(self) -> npt.NDArray[np.float64]:
        return self.matrix

    def replace(self, matrix: npt.NDArray[np.float64]) -> None:
        self.matrix = np.array(matrix, dtype=np.float64)

    def grow(self, prior: npt.NDArray[np.float64]) -> None:
        size = self.matrix.shape[0]
        grown = np.diag(np.concatenate([np.zeros(size), prior]))
        grown[:size, :size] = self.matrix
        self.matrix = grown

    def add_to_block(self, slot: int, prior: npt.NDArray[np.float64]) -> None:
        block = slice(self.dim * (1 + slot), self.dim * (2 + slot))
        self.matrix[block, block] += np.diag(prior)

    def variances(
        self, x: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        return np.array([self._row(x, int(s)) @ self.matrix @ self._row(x, int(s)) for s in slots])

    def update(self, x: npt.NDArray[np.float64], slot: int) -> npt.NDArray[np.float64]:
        z = self._row(x, slot)
        cz = self.matrix @ z
        gain = cz / (1.0 + z @ cz)
        self.matrix -= np.outer(gain, cz)
        return gain


def _policy(exploration: Any, reference: bool) -> CostAwarePolicy:
    policy = CostAwarePolicy(seed=3, semantic_dims=SEMANTIC_DIMS, exploration=exploration)
    if reference:
        prior = np.full(policy._dim, 1.0 / policy.shared_precision)
        policy._covariance = _DenseCovariance(policy._dim, prior)  # type: ignore[assignment]
    return policy


def _prompt(rng: np.random.Generator) -> PromptFeatures:
    embedding = rng.normal(size=64)
    embedding /= np.linalg.norm(embedding)
    return PromptFeatures(
        chars=int(rng.integers(10, 4000)),
        tokens=int(rng.integers(3, 1000)),
        turns=1,
        conversation_tokens=int(rng.integers(0, 3000)),
        shots=int(rng.integers(0, 5)),
        choices=int(rng.integers(0, 5)),
        numbers=int(rng.integers(0, 20)),
        lines=1,
        language="en",
        markers=(),
        words=(),
        embedding=tuple(np.round(embedding, 4).tolist()),
    )


def _stream(exploration: str, reference: bool) -> dict[str, Any]:
    """A seeded stream: prompts with embeddings, a moving cost multiplier, greedy requests,
    logged (warm-start) updates, a sixth model added at a third, the best model's quality
    dropping after half (a drift), and a snapshot restored into a new policy at 60%."""
    rng = np.random.default_rng(11)
    arms = [ModelSpec(f"m{i}", "p", 0.5 * (i + 1), 1.5 * (i + 1)) for i in range(5)]
    skill = rng.normal(size=(6, 64)) * 0.3
    policy = _policy(exploration, reference)
    lam = [0.0]
    policy.follow(lambda: lam[0])
    out: dict[str, Any] = {"probs": [], "chosen": [], "mean": []}
    for t in range(STEPS):
        if t == STEPS // 3:
            arms = [*arms, ModelSpec("m5", "p", 0.2, 0.6)]
        if t == STEPS * 3 // 5:
            restored = _policy(exploration, reference)
            restored.restore(policy.save())
            restored.follow(lambda: lam[0])
            policy = restored
        lam[0] = 0.0 if t < 100 else 5.0 * (1 + np.sin(t / 50))
        prompt = _prompt(rng)
        probs = policy.distribution(prompt, arms, explore=t % 7 != 0)
        chosen = int(rng.choice(len(arms), p=probs))
        out["probs"].append(probs)
        out["chosen"].append(chosen)
        out["mean"].append(policy.value_estimates(prompt, arms)[0])
        quality = 0.3 + 0.4 * (chosen == 2) + float(np.asarray(prompt.embedding) @ skill[chosen])
        if chosen == 2 and t > STEPS // 2:
            quality -= 0.8
        reward = float(np.clip(quality + rng.normal(scale=0.2), 0.0, 1.0))
        if t % 11 == 0:
            policy.learn_logged(prompt, arms, chosen, max(float(probs[chosen]), 0.05), reward)
        else:
            policy.learn(prompt, arms, chosen, float(probs[chosen]), reward)
    out["drifts"] = dict(policy.drifts)
    out["covariance"] = policy._covariance.dense()
    return out


@pytest.mark.parametrize("exploration", ["thompson", "squarecb"])
def test_block_covariance_decides_as_the_dense_reference(exploration: str) -> None:
    """With semantic features, on the same seeded stream, the policy gives the same
    probabilities (to 1e-9) and so the same chosen models, the same posterior means and the
    same covariance as the dense one-update-at-a-time reference, through a model added, a
    drift forgotten and a snapshot restored."""
    fast, reference = _stream(exploration, False), _stream(exploration, True)
    assert fast["chosen"] == reference["chosen"]
    for new, old in zip(fast["probs"], reference["probs"], strict=True):
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-9)
    for new, old in zip(fast["mean"], reference["mean"], strict=True):
        np.testing.assert_allclose(new, old, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast["covariance"], reference["covariance"], rtol=0, atol=1e-9)
    assert fast["drifts"] == reference["drifts"] == {"m2": 1}
    assert len(set(fast["chosen"])) == 6
