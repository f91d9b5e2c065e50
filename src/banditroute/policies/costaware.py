"""Cost-aware policy: learned value per model, cost priced at the budget pacer's multiplier.

A learner of one scalar reward ``quality - (cost_weight + lam) * cost`` struggles when a budget
pacer moves ``lam``: every reward it learned was priced at an older multiplier. This policy
keeps the moving price out of what it learns. It regresses the *price-free* value

    v = reward + lam_at_decision * cost_hat(x, a)

where ``cost_hat`` is the catalogue price of the prompt's tokens plus the model's typical
output, and scores each model at the current multiplier:

    score(x, a) = v_hat(x, a) - lam_now * cost_hat(x, a)

(errors of ``cost_hat`` at a given ``lam`` are absorbed into ``v``). ``lam`` comes from
:meth:`CostAwarePolicy.follow`, given the router's :class:`~banditroute.objectives.BudgetPacer`;
a policy that follows nothing uses ``lam = 0`` and is a plain regression bandit of the reward.

The value model is one Bayesian linear regression over the prompt's dense features ``x`` (the
numeric view of :class:`~banditroute.features.PromptFeatures`) with a block shared by every
model and one block per model: ``v_hat(x, a) = prior_mean + x . (w_shared + w_a)``. The prior
on a model's own feature weights is tight (``prior_precision``), on its intercept and on the
shared block loose, so early on a model's estimate pools everything it has seen across prompt
kinds and the per-kind differences grow as evidence accumulates: this is what lets a cold start
find good cheap models in a few hundred requests. Covariances are in units of the noise
variance, estimated per model from one-step-ahead residuals (``noise`` as a prior worth
:data:`NOISE_PSEUDO_COUNT` observations).

Cold-start options (both off by default: on the held-out tables neither beat the default,
benchmarks/README.md "Routing skill"):

* ``price_prior`` > 0, a pooled prior over the models' quality from their price (partial
  pooling as in hierarchical Bayesian bandits: Hong, Kveton, Zaheer and Ghavamzadeh,
  "Hierarchical Bayesian Bandits", AISTATS 2022; Kveton et al., "Meta-Thompson Sampling", ICML
  2021): the shared block reads one more column, the model's :func:`price_feature`, so the
  shared intercept and that slope are a line in log price learned from every model's
  outcomes, and each model's own intercept is its offset from the line, shrunk toward it
  with precision ``price_prior`` (in observations) instead of ``bias_precision``. An outcome
  of any model then moves every other model's estimate through the line. A model's price is
  read when it is first seen (a later price change does not move its learned value).
* ``joint``: Thompson probabilities from joint draws of the models' values (the posterior's
  covariance between models, :func:`joint_thompson_probabilities`), as linear Thompson
  sampling draws one weight vector for all arms (Agrawal and Goyal, "Thompson Sampling for
  Contextual Bandits with Linear Payoffs", ICML 2013): uncertainty the models share through
  the shared block moves them together and no longer counts as a reason to explore.

Exploration, all with honest probabilities that are a deterministic function of the learned
state (asking twice gives the same vector):

* ``thompson`` (default): each model's probability of having the highest score under the
  posterior with standard deviations scaled by ``posterior_scale / sqrt(1 + age /
  scale_halflife)`` (``scale_halflife`` 0: no decay), computed from fixed stratified draws
  (:func:`thompson_probabilities`), not by fresh sampling. The extra decay moves exploration to the
  start of the stream, where it buys the most. The defaults (scale 0.5, half-life 300; before
  0.7 and 1,000) were chosen on two disjoint halves of the tuning parts, 12 seeds each: cold,
  RouterBench at 10 / 20 / 25% budgets +1.1 / +1.2 / +0.4 points of GPT-4's quality,
  ParetoBandit +0.1 to +0.3, and ParetoBandit's regret against its best single model without a
  budget 0.005 -> 0.001 (benchmarks/README.md, "Routing skill"). A model's ``age`` is the
  clock since it was first seen or last drifted, so a model added later is explored afresh;

Drift: each model's one-step-ahead residuals feed a river ADWIN detector (``drift_delta``; 0
turns it off). When one fires, the model's own weights get their prior uncertainty back (its
mean is kept, its age restarts), so a model whose quality or price changed is re-learned in
tens of requests instead of being outvoted by its history; ``drifts`` counts the detections.
* ``squarecb``: inverse gap weighting of the posterior means, ``gamma = gamma_scale *
  sqrt(clock + 1)``;
* ``epsilon``: ``epsilon / K`` on every model, the rest on the best posterior mean.

The exploration ``clock`` counts the policy's own updates once each and updates from another
policy's log (:meth:`CostAwarePolicy.learn_logged`, a warm start) with their inverse logging
probability: a uniform log over K models explored as much, in expectation, as full information
on the same prompts, so it is credited as K updates (replayed on RouterBench with a warm start
from a uniform log of half the prompts, this raised the streamed half's quality by about 0.5
points; counting the policy's own updates that way instead hurt a cold start).

>>> from banditroute.catalog import ModelSpec
>>> from banditroute.features import extract
>>> arms = [ModelSpec("cheap", "p", 0.1, 0.1), ModelSpec("dear", "p", 10, 30)]
>>> policy = CostAwarePolicy(seed=1)
>>> for _ in range(30):
...     policy.learn(extract("2+2?"), arms, 0, 0.5, 0.9)
...     policy.learn(extract("2+2?"), arms, 1, 0.5, 0.2)
>>> policy.distribution(extract("2+2?"), arms).round(2).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import functools
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog
from scipy import special

from banditroute.catalog import ModelSpec
from banditroute.choices import EXPLORATIONS
from banditroute.features import MARKERS, PromptFeatures
from banditroute.policies.base import Policy, Probabilities
from banditroute.policies.blockcov import BlockCovariance
from banditroute.policies.costaware_snapshot import read_snapshot
from banditroute.policies.semantic_width import BlockLayout, carry_posterior

log = structlog.get_logger(__name__)

Exploration = Literal["thompson", "squarecb", "epsilon"]

_NUMERIC_KEYS: tuple[str, ...] = (
    "bias", "log_tokens", "log_conv_tokens", "shots", "choices", "numbers", "lang_en", *MARKERS,
)  # fmt: skip
DRIFT_MIN_UPDATES = 30
"""A model's residuals are watched for drift from its this-many-th update on."""
SEMANTIC_DIMS = 16
"""Embedding components the policy reads when semantic features are on: 16 raised RouterBench's
warm-started quality by about half a point on the tuning split, 8 did nothing."""
MAX_SEMANTIC_DIMS = 64
"""Most embedding components a policy may read (the embedding's own length)."""
NOISE_PSEUDO_COUNT = 5.0
"""Weight, in observations, of the prior noise level in each model's noise estimate."""
_REMEMBERED = 4096
"""How many decisions' multipliers are remembered until their reward arrives."""
PRICE_FLOOR_USD_PER_MTOK = 1e-4
"""Blended prices below this (a free model) are read as this by the price prior."""
PRICE_FEATURE_BOUND = 2.0
"""The price prior's regressor, log10 of the blended price halved, is clipped to +-this (USD
0.0001 to 10,000 per million tokens), so no price, however absurd, moves it without bound."""


def price_feature(arm: ModelSpec) -> float:
    """A model's regressor in the price prior: ``log10`` of its blended USD per million tokens,
    halved (one unit per two decades), clipped to :data:`PRICE_FEATURE_BOUND`."""
    blended = arm.blended_usd_per_mtok
    if not np.isfinite(blended) or blended < PRICE_FLOOR_USD_PER_MTOK:
        blended = PRICE_FLOOR_USD_PER_MTOK
    bound = PRICE_FEATURE_BOUND
    return float(np.clip(np.log10(blended) / 2.0, -bound, bound))


def feature_vector(context: PromptFeatures, semantic_dims: int = 0) -> npt.NDArray[np.float64]:
    """The dense features the per-model regressions read: the numeric view in a fixed order,
    then the first ``semantic_dims`` components of the prompt's embedding (zeros without one)."""
    numeric = context.numeric()
    values = [numeric[key] for key in _NUMERIC_KEYS]
    if semantic_dims:
        components = context.embedding[:semantic_dims]
        values += components
        values += _ZEROS[: semantic_dims - len(components)]
    # One conversion of the whole list (zeros and two slice assignments were three numpy
    # calls, each several µs with the caches cold on a Route).
    return np.array(values, dtype=np.float64)


DIMENSION = len(_NUMERIC_KEYS)
"""Numeric features per block (without semantic components)."""
_ZEROS = (0.0,) * MAX_SEMANTIC_DIMS
"""Zeros for the components a shorter (or absent) embedding lacks."""
THOMPSON_DRAWS = 1024
"""Fixed draws per arm behind :func:`thompson_probabilities` (probabilities in 1/1024 steps)."""


@functools.lru_cache(maxsize=64)
def _stratified_normals(arms: int) -> npt.NDArray[np.float64]:
    """``(THOMPSON_DRAWS, arms)`` standard-normal draws, fixed: each column holds the same
    THOMPSON_DRAWS quantiles (exact marginals, no sampling noise in any arm's own spread) in
    its own fixed random order (independent arms: a Latin hypercube)."""
    quantiles = special.ndtri((np.arange(THOMPSON_DRAWS) + 0.5) / THOMPSON_DRAWS)
    rng = np.random.default_rng(0x7A5)
    draws = np.stack([rng.permutation(quantiles) for _ in range(arms)], axis=1)
    draws.setflags(write=False)
    return draws


def thompson_probabilities(
    mean: npt.NDArray[np.float64], sd: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Probability that each independent ``N(mean_k, sd_k^2)`` draw is the largest.

    Estimated from :data:`THOMPSON_DRAWS` fixed stratified draws per arm: a deterministic
    function of the posterior, so the vector the router logs is exactly the one it samples
    from (its propensities are honest), within about 0.03 of the exact integral
    ``P_k = integral pdf_k(s) prod_{j != k} cdf_j(s) ds`` and about a quarter of its cost
    (the exact integral on a 528-point grid took most of Route's CPU). Ties go to the first
    arm, so a zero spread is the greedy choice.
    """
    k = len(mean)
    if k == 1:
        return np.ones(1)
    draws = mean + np.maximum(sd, 0.0) * _stratified_normals(k)
    counts = np.bincount(np.argmax(draws, axis=1), minlength=k)
    return np.asarray(counts / THOMPSON_DRAWS, dtype=np.float64)


def joint_thompson_probabilities(
    mean: npt.NDArray[np.float64], covariance: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Probability that each arm's draw is the largest when the arms' values are drawn jointly
    from ``N(mean, covariance)``, from the same fixed stratified normals as
    :func:`thompson_probabilities` (rotated by a square root of the covariance)."""
    k = len(mean)
    if k == 1:
        return np.ones(1)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    root = vectors * np.sqrt(np.maximum(eigenvalues, 0.0))
    draws = mean + _stratified_normals(k) @ root.T
    counts = np.bincount(np.argmax(draws, axis=1), minlength=k)
    return np.asarray(counts / THOMPSON_DRAWS, dtype=np.float64)


class CostAwarePolicy(Policy):
    """Per-model Bayesian linear value models; cost priced at the pacer's current multiplier."""

    name = "costaware"

    def __init__(
        self,
        *,
        exploration: Exploration = "thompson",
        posterior_scale: float = 0.5,
        scale_halflife: float = 300.0,
        gamma_scale: float = 50.0,
        epsilon: float = 0.05,
        prior_mean: float = 0.5,
        prior_precision: float = 30.0,
        bias_precision: float = 1.0,
        shared_precision: float = 0.1,
        noise: float = 0.5,
        drift_delta: float = 0.002,
        semantic_dims: int = 0,
        price_prior: float = 0.0,
        joint: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if exploration not in EXPLORATIONS:
            raise ValueError(f"exploration must be one of {', '.join(EXPLORATIONS)}")
        if posterior_scale < 0 or gamma_scale <= 0 or not 0 <= epsilon <= 1:
            raise ValueError("posterior_scale >= 0, gamma_scale > 0 and epsilon in [0, 1]")
        if min(prior_precision, bias_precision, shared_precision, noise) <= 0:
            raise ValueError("the prior precisions and the noise must be > 0")
        if not 0 <= semantic_dims <= MAX_SEMANTIC_DIMS:
            raise ValueError(f"semantic_dims must be in 0..{MAX_SEMANTIC_DIMS}")
        if not 0 <= drift_delta < 1:
            raise ValueError("drift_delta must be in [0, 1) (0: no drift detection)")
        if not 0 <= price_prior < float("inf"):
            raise ValueError("price_prior must be >= 0 and finite (0: no price prior)")
        self.exploration: Exploration = exploration
        self.posterior_scale = posterior_scale
        self.scale_halflife = scale_halflife
        self.gamma_scale = gamma_scale
        self.epsilon = epsilon
        self.prior_mean = prior_mean
        self.prior_precision = prior_precision
        self.bias_precision = bias_precision
        self.shared_precision = shared_precision
        self.noise = noise
        self.drift_delta = drift_delta
        self.semantic_dims = int(semantic_dims)
        self.carry_semantic = True
        """Whether :meth:`restore` carries a snapshot that read another number of embedding
        components into this layout (a server's restart after the setting changed); replay
        turns it off, to score a snapshot as it was saved or refuse it."""
        self.price_prior = float(price_prior)
        self.joint = bool(joint)
        self.seed = seed
        self._slots: dict[str, int] = {}
        # With the price prior, one more column: the model's price, read by the shared block.
        self._priced = self.price_prior > 0
        d = self._dim = DIMENSION + self.semantic_dims + int(self._priced)
        # Weights: a shared block (every model) then one block per model, in slot order.
        shared_prior = np.full(d, 1.0 / shared_precision)
        # Posterior covariance, in units of the noise variance.
        self._covariance = BlockCovariance(d, shared_prior)
        self._mean = np.zeros(d)  # posterior mean, updated recursively (recursive least squares)
        self._sse = np.zeros(0)  # per model: sum of squared one-step-ahead residuals
        self._count = np.zeros(0)
        self._born = np.zeros(0)  # per model: the exploration clock when it was added or drifted
        self._arm_price = np.zeros(0)  # per model: its price_feature when first seen
        self._logged_credit = 0.0  # exploration-clock updates credited beyond one per update
        self._detectors: dict[int, Any] = {}  # slot -> river ADWIN on one-step-ahead residuals
        self.drifts: dict[str, int] = {}  # model id -> drifts detected (and forgotten)
        self._multiplier: Callable[[], float] = lambda: 0.0
        # The multiplier each pending decision was scored with, keyed by the id of its
        # features object (the router passes the same object to distribution and learn).
        self._lam_at: OrderedDict[int, float] = OrderedDict()

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "exploration": self.exploration,
            "posterior_scale": self.posterior_scale,
            "scale_halflife": self.scale_halflife,
            "gamma_scale": self.gamma_scale,
            "epsilon": self.epsilon,
            "prior_mean": self.prior_mean,
            "prior_precision": self.prior_precision,
            "bias_precision": self.bias_precision,
            "shared_precision": self.shared_precision,
            "noise": self.noise,
            "drift_delta": self.drift_delta,
            "semantic_dims": self.semantic_dims,
            "price_prior": self.price_prior,
            "joint": self.joint,
            "seed": self.seed,
        }

    def follow(self, multiplier: Callable[[], float]) -> None:
        """Price cost at ``multiplier()`` (e.g. ``lambda: pacer.lam`` of the router's pacer)."""
        self._multiplier = multiplier

    @property
    def clock(self) -> float:
        """Updates as the exploration schedule counts them (see the module docstring)."""
        return self.updates + self._logged_credit

    def learn_logged(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        """Learn from another policy's logged decision; the clock advances ``1 / probability``."""
        self.learn(context, arms, chosen, probability, reward)
        self._logged_credit += 1.0 / probability - 1.0

    def value_estimates(
        self, context: PromptFeatures, arms: Sequence[ModelSpec]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Each arm's posterior mean price-free value and catalogue cost estimate at ``context``.

        Read-only (unlike :meth:`distribution`, nothing is remembered for a later reward).
        """
        mean, _ = self._posterior(context, self._slot_indices(arms))
        return mean, self._cost_hat(context, arms)

    # -- state -------------------------------------------------------------------------------
    def _slot_indices(self, arms: Sequence[ModelSpec]) -> npt.NDArray[np.int64]:
        new = [arm.id for arm in arms if arm.id not in self._slots]
        if new:
            d = self._dim
            for arm_id in new:
                self._slots[arm_id] = len(self._slots)
            self._covariance.grow(np.tile(self._own_prior(), len(new)))
            # Optimism for a model joining models already learned: its own intercept starts at
            # the best learned model's (a prior worth about one observation), so it is tried
            # at once and its first outcomes correct it; the first models start at 0.
            start = self._best_intercept()
            prior_mean = np.zeros(d * len(new))
            prior_mean[::d] = start
            self._mean = np.concatenate([self._mean, prior_mean])
            self._sse = np.concatenate([self._sse, np.zeros(len(new))])
            self._count = np.concatenate([self._count, np.zeros(len(new))])
            self._born = np.concatenate([self._born, np.full(len(new), self.clock)])
            by_id = {arm.id: arm for arm in arms}
            prices = [price_feature(by_id[arm_id]) for arm_id in new]
            self._arm_price = np.concatenate([self._arm_price, prices])
        return np.array([self._slots[arm.id] for arm in arms], dtype=np.int64)

    def _own_prior(self) -> npt.NDArray[np.float64]:
        """Prior variances of one model's own weights (in units of the noise variance): its
        intercept at ``1 / bias_precision`` (with the price prior ``1 / price_prior``: how far
        the model may sit from the pooled price line), its feature weights at ``1 /
        prior_precision``, and its copy of the price column at 0 (the price is constant per
        model, so only the shared block reads it)."""
        block = np.full(self._dim, 1.0 / self.prior_precision)
        block[0] = 1.0 / (self.price_prior if self._priced else self.bias_precision)
        if self._priced:
            block[-1] = 0.0
        return block

    def _rows(
        self, context: PromptFeatures, slots: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float64]:
        """Each arm's design features, ``(len(slots), dim)``: the prompt's features, then (with
        the price prior) the arm's price."""
        x = feature_vector(context, self.semantic_dims)
        if not self._priced:
            return np.broadcast_to(x, (len(slots), len(x)))
        rows = np.empty((len(slots), self._dim))
        rows[:, :-1] = x
        rows[:, -1] = self._arm_price[slots]
        return rows

    def _noise_var(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Each model's noise variance: its squared one-step-ahead residuals, with the prior
        ``noise`` worth :data:`NOISE_PSEUDO_COUNT` observations."""
        return np.asarray(
            (NOISE_PSEUDO_COUNT * self.noise**2 + self._sse[slots])
            / (NOISE_PSEUDO_COUNT + self._count[slots]),
            dtype=np.float64,
        )

    def _best_intercept(self) -> float:
        """The highest own intercept among the models learned so far (0 before any update)."""
        learned = [slot for slot in range(len(self._count)) if self._count[slot] > 0]
        if not learned:
            return 0.0
        d = self._dim
        return max(0.0, *(float(self._mean[d * (1 + slot)]) for slot in learned))

    @staticmethod
    def _cost_hat(context: PromptFeatures, arms: Sequence[ModelSpec]) -> npt.NDArray[np.float64]:
        return np.array([arm.price(context.tokens, arm.typical_output_tokens) for arm in arms])

    def _posterior(
        self, context: PromptFeatures, slots: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Posterior mean and standard deviation of each arm's value at the prompt.

        An arm's design row is its features ``x`` (:meth:`_rows`) in the shared block and in
        its own block, zeros elsewhere, so only those two blocks of the weights are read, and
        of the covariance the arm's combined block ``C_ss + C_sa + C_as + C_aa``, which
        :class:`BlockCovariance` keeps current.
        """
        d = self._dim
        blocks = self._mean.reshape(-1, d)
        noise_var = self._noise_var(slots)
        if self._priced:
            rows = self._rows(context, slots)
            mean = self.prior_mean + np.einsum("kd,kd->k", blocks[0] + blocks[1 + slots], rows)
            var = self._covariance.row_variances(rows, slots) * noise_var
        else:
            x = feature_vector(context, self.semantic_dims)
            mean = self.prior_mean + (blocks[0] + blocks[1 + slots]) @ x
            var = self._covariance.variances(x, slots) * noise_var
        return mean, np.sqrt(np.maximum(var, 0.0))

    # -- policy ------------------------------------------------------------------------------
    def _scores(
        self, context: PromptFeatures, arms: Sequence[ModelSpec]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Each arm's score at the current multiplier, its posterior sd, and its slot."""
        lam = float(self._multiplier())
        self._lam_at[id(context)] = lam
        if len(self._lam_at) > _REMEMBERED:
            self._lam_at.popitem(last=False)
        slots = self._slot_indices(arms)
        mean, sd = self._posterior(context, slots)
        return mean - lam * self._cost_hat(context, arms), sd, slots

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        score, sd, slots = self._scores(context, arms)
        k = len(arms)
        if self.exploration == "thompson" and self.joint:
            return self._joint_thompson(context, score, slots)
        if self.exploration == "thompson":
            return thompson_probabilities(score, sd * self._scales(slots))
        best = int(np.argmax(score))
        if self.exploration == "epsilon":
            probs = np.full(k, self.epsilon / k)
            probs[best] += 1.0 - self.epsilon
            return probs
        gamma = self.gamma_scale * np.sqrt(self.clock + 1.0)
        probs = np.asarray(1.0 / (k + gamma * (score[best] - score)), dtype=np.float64)
        probs[best] = 0.0
        probs[best] = max(0.0, 1.0 - probs.sum())
        return probs

    def _joint_thompson(
        self, context: PromptFeatures, score: npt.NDArray[np.float64], slots: npt.NDArray[np.int64]
    ) -> Probabilities:
        """Thompson probabilities from joint draws of the models' values."""
        rows = np.ascontiguousarray(self._rows(context, slots))
        noise_var = self._noise_var(slots)
        spread = np.sqrt(noise_var) * self._scales(slots)
        cov = self._covariance.score_covariance(rows, slots) * np.outer(spread, spread)
        return joint_thompson_probabilities(score, cov)

    def _scales(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Each arm's Thompson scale: ``posterior_scale / sqrt(1 + age / scale_halflife)``.

        An arm's age is the exploration clock since the arm was first seen or last drifted, so
        a model added to a long-running router (or one whose quality changed) is explored as
        a fresh router would explore it, while the others keep their decayed scale.
        """
        scale = np.full(len(slots), self.posterior_scale)
        if self.scale_halflife > 0:
            born = self._born[slots]
            age = np.maximum(self.clock - born, 0.0)
            scale /= np.sqrt(1.0 + age / self.scale_halflife)
        return scale

    def best(self, context: PromptFeatures, arms: Sequence[ModelSpec], probs: Probabilities) -> int:
        score, _, _ = self._scores(context, arms)
        return int(np.argmax(score))

    def _learn(
        self,
        context: PromptFeatures,
        arms: Sequence[ModelSpec],
        chosen: int,
        probability: float,
        reward: float,
    ) -> None:
        lam = self._lam_at.pop(id(context), None)
        if lam is None:
            lam = float(self._multiplier())
        value = reward + lam * float(self._cost_hat(context, arms[chosen : chosen + 1])[0])
        # Every eligible model is seen (and its age starts) together.
        slot = int(self._slot_indices(arms)[chosen])
        d = self._dim
        x = np.array(self._rows(context, np.array([slot]))[0])
        own = slice(d * (1 + slot), d * (2 + slot))
        residual = value - self.prior_mean - float(x @ (self._mean[:d] + self._mean[own]))
        self._sse[slot] += residual**2
        self._count[slot] += 1
        drifted = self._drifted(slot, residual)
        # Sherman-Morrison update of (prior precision + Z'Z)^-1 for the design row z (x in the
        # shared block and in the model's own block).
        gain = self._covariance.update(x, slot)
        self._mean += gain * residual  # recursive least squares: O(D), not O(D^2)
        if drifted:
            self._forget(slot, arms[chosen].id)

    # -- drift -------------------------------------------------------------------------------
    def drift_counts(self) -> Mapping[str, int]:
        return dict(self.drifts)

    def _drifted(self, slot: int, residual: float) -> bool:
        """Feed a model's residual to its ADWIN detector; True when its mean has shifted.

        Residuals are the value minus the one-step-ahead prediction at the prompt's features, so
        a change in which prompts a model is sent (the policy specialising) does not look like
        drift, while a change in how well the model answers them does. A model is watched once
        it has :data:`DRIFT_MIN_UPDATES` updates: before that its residuals shrink as it is
        learned, which is no drift.
        """
        if self.drift_delta <= 0 or self._count[slot] < DRIFT_MIN_UPDATES:
            return False
        detector = self._detectors.get(slot)
        if detector is None:
            from river.drift import ADWIN  # river takes a second to import: only when needed

            detector = ADWIN(delta=self.drift_delta)  # type: ignore[no-untyped-call]
            self._detectors[slot] = detector
        detector.update(residual)
        return bool(detector.drift_detected)

    def _forget(self, slot: int, model: str) -> None:
        """Give a drifted model's own weights their prior uncertainty back (a Kalman random-walk
        step on its block), keeping every estimate's mean: new outcomes then move its value
        quickly while the other models and the shared block keep what they learned."""
        self._covariance.add_to_block(slot, self._own_prior())  # the mean is kept as it is
        self._sse[slot] = 0.0
        self._count[slot] = 0.0
        self._born[slot] = self.clock
        self._detectors.pop(slot, None)
        self.drifts[model] = self.drifts.get(model, 0) + 1
        log.info(
            "model_drift_detected", model=model, drifts=self.drifts[model], updates=self.updates
        )

    # -- snapshots ---------------------------------------------------------------------------
    def save(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            kind=np.array("costaware"),
            slots=np.array(json.dumps(self._slots)),
            cov=self._covariance.dense(),
            mean=self._mean,
            sse=self._sse,
            count=self._count,
            born=self._born,
            arm_price=self._arm_price,
            updates=np.array(self.updates),
            logged_credit=np.array(self._logged_credit),
            drifts=np.array(json.dumps(self.drifts)),
            semantic_dims=np.array(self.semantic_dims),
            priced=np.array(self._priced),
        )
        return buffer.getvalue()

    def _carried(
        self,
        covariance: npt.NDArray[np.float64],
        mean: npt.NDArray[np.float64],
        models: int,
        widths: Mapping[str, int],
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """A snapshot's covariance and mean in this policy's layout: as they are when the
        layouts agree; carried over (:func:`carry_posterior`) when the snapshot read another
        number of embedding components (semantic features turned on or off since) and
        :attr:`carry_semantic` allows it; a ValueError when it cannot be read in this layout
        (another price prior setting, or shapes that fit no layout). A snapshot without the
        layout markers (written before them) is read by its width, as one with 0 or
        :data:`SEMANTIC_DIMS` components only, the widths an earlier build wrote: any other
        width could be a price column read as an embedding weight, or the reverse."""
        blocks = 1 + models
        size = self._dim * blocks
        priced = bool(widths.get("priced", self._priced))
        said = widths.get("semantic_dims", self.semantic_dims)
        fits = covariance.shape == (size, size) and mean.shape == (size,)
        if fits and (said, priced) == (self.semantic_dims, self._priced):
            return covariance, mean
        width, remainder = divmod(len(mean), blocks)
        semantic = widths.get("semantic_dims", width - DIMENSION - int(priced))
        if (
            priced != self._priced
            or remainder
            or not 0 <= semantic <= MAX_SEMANTIC_DIMS
            or ("semantic_dims" not in widths and semantic not in (0, SEMANTIC_DIMS))
            or width != DIMENSION + semantic + int(priced)
        ):
            raise ValueError("not a valid costaware snapshot: wrong shapes")
        if not self.carry_semantic:
            raise ValueError(
                f"the snapshot reads {semantic} embedding components, this policy "
                f"{self.semantic_dims} (features.semantic differs from the snapshot's)"
            )
        layout = BlockLayout(blocks, DIMENSION, semantic, int(priced))
        prior = np.concatenate(
            [np.full(self._dim, 1.0 / self.shared_precision), np.tile(self._own_prior(), models)]
        )
        carried = carry_posterior(
            covariance,
            mean,
            layout,
            BlockLayout(blocks, DIMENSION, self.semantic_dims, int(priced)),
            prior,
        )
        # A warning: expected once after the setting changed, a misconfiguration if it repeats
        # (a cluster's trainer and replicas configured differently).
        log.warning(
            "snapshot_semantic_width_carried", from_dims=semantic, to_dims=self.semantic_dims
        )
        return carried

    def restore(self, data: bytes) -> None:
        """Take a :meth:`save` snapshot's state. Every value is read and checked first (types,
        shapes, finite numbers, one block per model slot, a symmetric covariance), so a refused
        snapshot (ValueError, whatever was wrong with it) leaves the policy as it was."""
        try:
            state = read_snapshot(data)
        except Exception as exc:  # a crafted file fails in many ways: all are its content
            raise ValueError(f"not a valid costaware snapshot: {exc}") from exc
        covariance, mean = self._carried(
            state.covariance, state.mean, len(state.slots), state.widths
        )
        self._slots = state.slots
        self._covariance.replace(covariance)
        self._mean = mean
        self._sse, self._count = state.sse, state.counts
        self.updates = state.updates
        self._logged_credit = state.credit
        self.drifts = state.drifts
        self._born, self._arm_price = state.born, state.price
        self._detectors = {}
