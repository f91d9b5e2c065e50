"""The replay environment: reveals one model's outcome for one prompt, and nothing else.

Latency is simulated, since no outcome table records it. For model ``m`` answering a call with
``n`` output tokens::

    latency_ms = ttft_m * exp(s_ttft * z1 - s_ttft^2 / 2)
               + 1000 * n / speed_m * exp(s_dec * z2 - s_dec^2 / 2)

with ``z1, z2`` independent standard normals drawn per (prompt, model) from the run's seed, so
each term is lognormal with mean equal to the prior (time to first token ``ttft_ms``, decode
speed ``tokens_per_s`` from the run's catalogue). The defaults ``s_ttft = 0.35`` and
``s_dec = 0.2`` give the long right tail measured latencies have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from banditroute.catalog import Catalog
from banditroute.outcome_tables import FloatMatrix


@dataclass(frozen=True)
class LatencyModel:
    """Per-model time to first token plus output tokens over decode speed, lognormal noise."""

    ttft_ms: tuple[float, ...]
    tokens_per_s: tuple[float, ...]
    ttft_sigma: float = 0.35
    decode_sigma: float = 0.2

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> LatencyModel:
        """Priors from the run's catalogue, in catalogue order."""
        return cls(tuple(m.ttft_ms for m in catalog), tuple(m.tokens_per_s for m in catalog))

    def expected(self, output_tokens: FloatMatrix) -> FloatMatrix:
        """Mean latency (ms) of each call, without noise."""
        ttft = np.asarray(self.ttft_ms)[None, :]
        speed = np.asarray(self.tokens_per_s)[None, :]
        result: FloatMatrix = ttft + 1000.0 * output_tokens / speed
        return result

    def sample(self, output_tokens: FloatMatrix, seed: int) -> FloatMatrix:
        """One latency draw (ms) for every (prompt, model), reproducible from ``seed``."""
        rng = np.random.default_rng([seed, 0x1A7E])
        z1 = rng.standard_normal(output_tokens.shape)
        z2 = rng.standard_normal(output_tokens.shape)
        ttft = np.asarray(self.ttft_ms)[None, :] * np.exp(
            self.ttft_sigma * z1 - self.ttft_sigma**2 / 2
        )
        decode = (
            1000.0
            * output_tokens
            / np.asarray(self.tokens_per_s)[None, :]
            * np.exp(self.decode_sigma * z2 - self.decode_sigma**2 / 2)
        )
        result: FloatMatrix = ttft + decode
        return result


@dataclass(frozen=True)
class Outcome:
    """What the environment reveals for the chosen model."""

    quality: float
    cost_usd: float
    latency_ms: float
    output_tokens: float


class ReplayEnvironment:
    """Full-information outcomes behind a bandit interface: :meth:`reveal` one cell at a time.

    ``revealed`` counts the cells shown, so a test can check that a run saw exactly one outcome
    per routed prompt.
    """

    def __init__(
        self,
        quality: FloatMatrix,
        cost_usd: FloatMatrix,
        latency_ms: FloatMatrix,
        output_tokens: FloatMatrix,
    ) -> None:
        self._quality = quality
        self._cost = cost_usd
        self._latency = latency_ms
        self._output = output_tokens
        self.revealed = 0

    def swap(self, quality: FloatMatrix, cost_usd: FloatMatrix) -> None:
        """Reveal these qualities and costs from now on (a model that changed mid-stream)."""
        if quality.shape != self._quality.shape or cost_usd.shape != self._cost.shape:
            raise ValueError("the new outcomes must have the table's shape")
        self._quality, self._cost = quality, cost_usd

    def reveal(self, prompt: int, model: int) -> Outcome:
        """The outcome of ``model`` on ``prompt`` (the only way the router learns anything)."""
        self.revealed += 1
        return Outcome(
            float(self._quality[prompt, model]),
            float(self._cost[prompt, model]),
            float(self._latency[prompt, model]),
            float(self._output[prompt, model]),
        )
