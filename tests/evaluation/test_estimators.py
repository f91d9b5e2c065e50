"""Tests of the off-policy estimators in ``banditroute.evaluation``.

Ground truth comes from a small synthetic bandit whose mean reward per (context type, action)
is known, so the true value of every target policy is known exactly. Optional cross-checks
run against ``vw-estimators`` (IPS, SNIPS, Gaussian interval) and ``obp`` 0.5.7 (DM, DR,
SNDR, Switch-DR, clipped IPS/DR) when those packages are installed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banditroute.evaluation import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    Estimator,
    Interval,
    LoggedData,
    SwitchDR,
    bernstein_interval,
    bootstrap_interval,
    diagnostics,
    evaluate,
    normal_interval,
    resample_sums,
)

# ---------------------------------------------------------------------------------------------
# A synthetic bandit with known truth: 6 context types, 4 actions (models).

K = 4
MU = np.array(
    [
        [0.80, 0.55, 0.30, 0.60],
        [0.20, 0.70, 0.45, 0.35],
        [0.50, 0.40, 0.90, 0.25],
        [0.65, 0.15, 0.40, 0.75],
        [0.35, 0.60, 0.55, 0.50],
        [0.10, 0.45, 0.70, 0.85],
    ]
)
"""True mean reward per (context type, action); rewards are Bernoulli(MU)."""
ELIGIBLE = np.array(
    [
        [True, True, True, False],
        [True, True, True, True],
        [True, False, True, True],
        [True, True, True, True],
        [True, True, False, True],
        [False, True, True, True],
    ]
)
TYPE_PROBS = np.full(MU.shape[0], 1 / MU.shape[0])
LOG_SCORES = np.array(
    [
        [0.0, 1.0, 0.5, 0.0],
        [1.0, 0.0, 0.5, 0.2],
        [0.3, 0.0, 0.0, 1.0],
        [0.0, 1.0, 0.8, 0.0],
        [1.0, 0.0, 0.0, 0.3],
        [0.0, 0.7, 0.2, 0.0],
    ]
)
EPSILON = 0.2


def _softmax_rows(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    z = np.where(eligible, scores, -np.inf)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def _one_hot(index: np.ndarray) -> np.ndarray:
    return np.asarray(np.eye(K)[index], dtype=np.float64)


LOGGING = (1 - EPSILON) * _softmax_rows(2 * LOG_SCORES, ELIGIBLE) + EPSILON * (
    ELIGIBLE / ELIGIBLE.sum(axis=1, keepdims=True)
)
"""Logging policy per type: a softmax mixed with 20 % uniform exploration over eligible."""

TARGETS: dict[str, np.ndarray] = {
    "best": _one_hot(np.where(ELIGIBLE, MU, -np.inf).argmax(axis=1)),
    "first-eligible": _one_hot(ELIGIBLE.argmax(axis=1)),
    "uniform": ELIGIBLE / ELIGIBLE.sum(axis=1, keepdims=True),
    "softmax": _softmax_rows(5 * MU, ELIGIBLE),
}
"""Candidate policies per type: two deterministic, two stochastic."""


def _true_value(policy: np.ndarray) -> float:
    return float(TYPE_PROBS @ (policy * MU).sum(axis=1))


@dataclass(frozen=True)
class Sample:
    """One logged sample from the synthetic bandit."""

    data: LoggedData
    types: np.ndarray


def _simulate(rng: np.random.Generator, n: int) -> Sample:
    kinds = rng.choice(MU.shape[0], size=n, p=TYPE_PROBS)
    probs = LOGGING[kinds]
    cumulative = probs.cumsum(axis=1)
    draws = rng.random(n)[:, None] * cumulative[:, -1:]
    actions = (cumulative > draws).argmax(axis=1)  # never an action of probability 0
    rows = np.arange(n)
    rewards = (rng.random(n) < MU[kinds, actions]).astype(float)
    data = LoggedData(actions, rewards, probs[rows, actions], ELIGIBLE[kinds], probs)
    return Sample(data, kinds)


def _noisy_model(rng: np.random.Generator, kinds: np.ndarray) -> np.ndarray:
    """A decent but imperfect reward model: the truth plus N(0, 0.1) noise per cell."""
    return np.asarray((MU + rng.normal(0.0, 0.1, size=MU.shape))[kinds], dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Small random data for identities, validation and cross-checks.


@dataclass(frozen=True)
class Small:
    """Random valid inputs: log, target policy and reward model."""

    data: LoggedData
    target: np.ndarray
    reward_model: np.ndarray


def _random_policy(rng: np.random.Generator, mask: np.ndarray, sharpness: float) -> np.ndarray:
    return _softmax_rows(sharpness * rng.normal(size=mask.shape), mask)


def _small(seed: int = 7, n: int = 500, k: int = 5) -> Small:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, k)) < 0.7
    mask[np.arange(n), rng.integers(0, k, n)] = True
    logging = _random_policy(rng, mask, 1.0)
    cumulative = logging.cumsum(axis=1)
    actions = (cumulative > rng.random(n)[:, None] * cumulative[:, -1:]).argmax(axis=1)
    rows = np.arange(n)
    rewards = rng.normal(0.5, 1.0, size=n)
    data = LoggedData(actions, rewards, logging[rows, actions], mask, logging)
    target = _random_policy(rng, mask, 2.0)
    return Small(data, target, rng.normal(0.5, 0.5, size=(n, k)))


@pytest.fixture(scope="module")
def small() -> Small:
    return _small()


ALL_ESTIMATORS: list[Estimator] = [IPS(), SNIPS(), DM(), DR(), SNDR(), SwitchDR(tau=3.0)]
METHODS = ["bootstrap", "normal", "bernstein"]


# ---------------------------------------------------------------------------------------------
# Invalid input -> ValueError naming the field.


def _log_kwargs(small: Small) -> dict[str, Any]:
    d = small.data
    return {
        "actions": d.actions.copy(),
        "rewards": d.rewards.copy(),
        "propensities": d.propensities.copy(),
        "mask": d.mask.copy(),
        "logging_probs": None if d.logging_probs is None else d.logging_probs.copy(),
    }


def _edit(field: str, change: Callable[[Any], Any]) -> Callable[[Small], dict[str, Any]]:
    def build(small: Small) -> dict[str, Any]:
        kwargs = _log_kwargs(small)
        kwargs[field] = change(kwargs[field])
        return kwargs

    return build


def _set(array: np.ndarray, index: Any, value: Any) -> np.ndarray:
    array = array.copy()
    array[index] = value
    return array


def _ineligible_action(small: Small) -> dict[str, Any]:
    kwargs = _log_kwargs(small)
    row = int(np.flatnonzero(~small.data.mask.all(axis=1))[0])
    kwargs["actions"][row] = int(np.flatnonzero(~small.data.mask[row])[0])
    return kwargs


LOG_CASES = [
    ("actions float", _edit("actions", lambda a: a.astype(float)), "actions"),
    ("actions bool", _edit("actions", lambda a: a.astype(bool)), "actions"),
    ("actions short", _edit("actions", lambda a: a[:-1]), "actions"),
    ("actions negative", _edit("actions", lambda a: _set(a, 3, -1)), "actions"),
    ("actions >= K", _edit("actions", lambda a: _set(a, 3, 5)), "actions"),
    ("actions ineligible", _ineligible_action, "actions"),
    ("rewards NaN", _edit("rewards", lambda r: _set(r, 2, np.nan)), "rewards"),
    ("rewards inf", _edit("rewards", lambda r: _set(r, 2, np.inf)), "rewards"),
    ("rewards 2-D", _edit("rewards", lambda r: r[:, None]), "rewards"),
    ("rewards strings", _edit("rewards", lambda r: r.astype(str)), "rewards"),
    ("propensity 0", _edit("propensities", lambda p: _set(p, 4, 0.0)), "propensities"),
    ("propensity > 1", _edit("propensities", lambda p: _set(p, 4, 1.5)), "propensities"),
    ("propensity negative", _edit("propensities", lambda p: _set(p, 4, -0.2)), "propensities"),
    ("propensity NaN", _edit("propensities", lambda p: _set(p, 4, np.nan)), "propensities"),
    ("propensities long", _edit("propensities", lambda p: np.append(p, 0.5)), "propensities"),
    ("mask int", _edit("mask", lambda m: m.astype(int)), "mask"),
    ("mask 1-D", _edit("mask", lambda m: m[:, 0]), "mask"),
    ("mask empty", _edit("mask", lambda m: m[:0]), "mask"),
    ("logging_probs shape", _edit("logging_probs", lambda q: q[:, :-1]), "logging_probs"),
    ("logging_probs sum", _edit("logging_probs", lambda q: q * 0.9), "logging_probs"),
    (
        "logging_probs NaN",
        _edit("logging_probs", lambda q: _set(q, (0, 0), np.nan)),
        "logging_probs",
    ),
    (
        "logging_probs disagree",
        _edit("logging_probs", lambda q: np.where(q > 0, 1.0, 0.0) / (q > 0).sum(1, keepdims=True)),
        "logging_probs",
    ),
]


@pytest.mark.parametrize(("case", "build", "field"), LOG_CASES, ids=[c[0] for c in LOG_CASES])
def test_logged_data_rejects_invalid_input(
    small: Small, case: str, build: Callable[[Small], dict[str, Any]], field: str
) -> None:
    """Each malformed log field raises ValueError whose message starts with the field name."""
    with pytest.raises(ValueError, match=rf"^{field}:"):
        LoggedData(**build(small))


def _mass_on_ineligible(small: Small) -> np.ndarray:
    row = int(np.flatnonzero(~small.data.mask.all(axis=1))[0])
    target = small.target.copy()
    target[row] = np.where(small.data.mask[row], 0.0, 1.0) / (~small.data.mask[row]).sum()
    return target


def _never_logged(small: Small) -> np.ndarray:
    """A deterministic target that never picks the logged action (where that is possible)."""
    d = small.data
    choices = np.where(d.mask, 1.0, 0.0)
    choices[np.arange(d.n), d.actions] = 0.0
    return np.asarray(choices / np.maximum(choices.sum(axis=1, keepdims=True), 1.0))


CALL_CASES: list[tuple[str, Callable[[Small], dict[str, Any]], str]] = [
    ("target shape", lambda s: {"target": s.target[:, :-1]}, "target"),
    ("target rows sum 0.9", lambda s: {"target": s.target * 0.9}, "target"),
    ("target NaN", lambda s: {"target": _set(s.target, (1, 0), np.nan)}, "target"),
    ("target negative", lambda s: {"target": s.target - s.target.max() / 2}, "target"),
    ("target on ineligible", lambda s: {"target": _mass_on_ineligible(s)}, "target"),
    ("reward_model shape", lambda s: {"reward_model": s.reward_model[:-1]}, "reward_model"),
    (
        "reward_model NaN",
        lambda s: {"reward_model": _set(s.reward_model, 0, np.nan)},
        "reward_model",
    ),
    ("reward_model missing", lambda s: {"reward_model": None}, "reward_model"),
    ("level 0", lambda s: {"level": 0.0}, "level"),
    ("level 1", lambda s: {"level": 1.0}, "level"),
    ("level 95", lambda s: {"level": 95}, "level"),
    ("level negative", lambda s: {"level": -0.5}, "level"),
    ("method unknown", lambda s: {"method": "jackknife"}, "method"),
    ("n_boot 1", lambda s: {"n_boot": 1}, "n_boot"),
    ("n_boot float", lambda s: {"n_boot": 100.0}, "n_boot"),
    ("seed negative", lambda s: {"seed": -3}, "seed"),
    ("seed string", lambda s: {"seed": "abc"}, "seed"),
]


@pytest.mark.parametrize(("case", "build", "field"), CALL_CASES, ids=[c[0] for c in CALL_CASES])
def test_interval_rejects_invalid_arguments(
    small: Small, case: str, build: Callable[[Small], dict[str, Any]], field: str
) -> None:
    """Bad target, reward model or interval arguments raise ValueError naming the argument."""
    arguments: dict[str, Any] = {"target": small.target, "reward_model": small.reward_model}
    arguments.update(build(small))
    target = arguments.pop("target")
    model = arguments.pop("reward_model")
    with pytest.raises(ValueError, match=rf"^{field}:"):
        DR().interval(small.data, target, model, **arguments)


HYPER_CASES: list[tuple[str, Callable[[], object], str]] = [
    ("tau negative", lambda: SwitchDR(tau=-1.0), "tau"),
    ("tau NaN", lambda: SwitchDR(tau=math.nan), "tau"),
    ("tau string", lambda: SwitchDR(tau="big"), "tau"),  # type: ignore[arg-type]
    ("DR clip 0", lambda: DR(clip=0.0), "clip"),
    ("DR clip negative", lambda: DR(clip=-2.0), "clip"),
    ("IPS clip NaN", lambda: IPS(clip=math.nan), "clip"),
    ("Interval level", lambda: Interval(0.5, 0.4, 0.6, 1.5), "level"),
    ("Interval misordered", lambda: Interval(0.5, 0.6, 0.4, 0.9), "estimate"),
    ("Interval NaN", lambda: Interval(math.nan, 0.4, 0.6, 0.9), "estimate"),
    ("normal values 1", lambda: normal_interval([1.0]), "values"),
    ("bernstein range", lambda: bernstein_interval([1.0, 2.0], value_range=-1.0), "value_range"),
    ("resample_sums 1-D", lambda: resample_sums(np.ones(5), n_boot=5), "columns"),
]


@pytest.mark.parametrize(("case", "build", "field"), HYPER_CASES, ids=[c[0] for c in HYPER_CASES])
def test_constructors_reject_invalid_hyperparameters(
    case: str, build: Callable[[], object], field: str
) -> None:
    """Invalid hyperparameters and interval fields raise ValueError naming the field."""
    with pytest.raises(ValueError, match=rf"^{field}:"):
        build()


def test_self_normalised_estimate_without_support_is_an_error(small: Small) -> None:
    """SNIPS is undefined when the target never picks a logged action: ValueError on target."""
    target = _never_logged(small)
    rows = np.arange(small.data.n)
    supported = target[rows, small.data.actions] > 0
    keep = ~supported & (target.sum(axis=1) > 0)
    d = small.data
    assert d.logging_probs is not None
    data = LoggedData(
        d.actions[keep], d.rewards[keep], d.propensities[keep], d.mask[keep], d.logging_probs[keep]
    )
    with pytest.raises(ValueError, match=r"^target:"):
        SNIPS().estimate(data, target[keep])


def test_logged_data_is_read_only_and_leaves_caller_arrays_writable(small: Small) -> None:
    """LoggedData stores read-only views; the caller's own arrays stay writable."""
    kwargs = _log_kwargs(small)
    data = LoggedData(**kwargs)
    assert kwargs["rewards"].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        data.rewards[0] = 1.0
    assert (data.n, data.n_actions) == (500, 5)
    assert data.actions.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Ground truth: coverage and error over 100 repetitions of the synthetic bandit.

REPETITIONS = 100
N_DECISIONS = 2000
COVERAGE_ESTIMATORS: dict[str, Estimator] = {"ips": IPS(), "snips": SNIPS(), "dr": DR()}


@dataclass(frozen=True)
class Record:
    """One (repetition, policy, method, estimator) outcome."""

    policy: str
    method: str
    estimator: str
    interval: Interval
    truth: float


@pytest.fixture(scope="module")
def repetitions() -> list[Record]:
    rng = np.random.default_rng(20240611)
    records: list[Record] = []
    estimators = list(COVERAGE_ESTIMATORS.values())
    for _ in range(REPETITIONS):
        sample = _simulate(rng, N_DECISIONS)
        model = _noisy_model(rng, sample.types)
        for policy, per_type in TARGETS.items():
            target = per_type[sample.types]
            truth = _true_value(per_type)
            for method in METHODS:
                results = evaluate(
                    estimators,
                    sample.data,
                    target,
                    model,
                    method=method,
                    n_boot=100,
                    seed=int(rng.integers(2**31)),
                )
                records.extend(
                    Record(policy, method, est.name, result, truth)
                    for est, result in zip(estimators, results, strict=True)
                )
    return records


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("estimator", list(COVERAGE_ESTIMATORS))
@pytest.mark.parametrize("policy", list(TARGETS))
def test_interval_covers_true_value(
    repetitions: list[Record], policy: str, estimator: str, method: str
) -> None:
    """The 95 % interval holds the exact true policy value in >= 90 % of 100 repetitions."""
    hits = [
        r.interval.contains(r.truth)
        for r in repetitions
        if (r.policy, r.estimator, r.method) == (policy, estimator, method)
    ]
    assert len(hits) == REPETITIONS
    assert np.mean(hits) >= 0.90


@pytest.mark.parametrize("policy", list(TARGETS))
def test_doubly_robust_beats_ips_with_a_decent_reward_model(
    repetitions: list[Record], policy: str
) -> None:
    """With a good but noisy reward model, DR's mean absolute error is below IPS's."""

    def mae(name: str) -> float:
        errors = [
            abs(r.interval.estimate - r.truth)
            for r in repetitions
            if (r.policy, r.estimator, r.method) == (policy, name, "normal")
        ]
        return float(np.mean(errors))

    assert mae("dr") < mae("ips")


def test_estimates_are_close_to_the_truth_on_average(repetitions: list[Record]) -> None:
    """IPS and DR are unbiased here: their mean error over repetitions is near zero."""
    for name in ("ips", "dr"):
        for policy in TARGETS:
            errors = [
                r.interval.estimate - r.truth
                for r in repetitions
                if (r.policy, r.estimator, r.method) == (policy, name, "normal")
            ]
            assert abs(np.mean(errors)) < 3 * np.std(errors) / math.sqrt(len(errors)) + 1e-3


# ---------------------------------------------------------------------------------------------
# Exact identities.


def test_ips_of_the_logging_policy_is_the_mean_reward(small: Small) -> None:
    """Evaluating the logging policy itself gives weights 1, so IPS is the mean reward."""
    d = small.data
    assert d.logging_probs is not None
    assert IPS().estimate(d, d.logging_probs) == pytest.approx(d.rewards.mean(), rel=1e-12)
    assert SNIPS().estimate(d, d.logging_probs) == pytest.approx(d.rewards.mean(), rel=1e-12)


def test_snips_equals_ips_when_weights_average_to_one() -> None:
    """With importance weights 0.5 and 1.5 (mean 1), SNIPS and IPS coincide."""
    mask = np.ones((2, 2), dtype=bool)
    data = LoggedData(np.array([0, 0]), np.array([0.3, 0.9]), np.array([0.5, 0.5]), mask)
    target = np.array([[0.25, 0.75], [0.75, 0.25]])
    ips = IPS().estimate(data, target)
    assert ips == pytest.approx(0.5 * (0.5 * 0.3 + 1.5 * 0.9), rel=1e-15)
    assert SNIPS().estimate(data, target) == pytest.approx(ips, rel=1e-15)
    assert np.allclose(SNIPS().per_sample(data, target), IPS().per_sample(data, target))


def test_dm_with_the_true_reward_model_is_the_conditional_true_value() -> None:
    """DM with q̂ = true means returns Σ_a π(a|x) μ(x, a) averaged over the logged contexts."""
    sample = _simulate(np.random.default_rng(3), 1000)
    for per_type in TARGETS.values():
        target = per_type[sample.types]
        expected = float(np.mean((target * MU[sample.types]).sum(axis=1)))
        assert DM().estimate(sample.data, target, MU[sample.types]) == pytest.approx(
            expected, rel=1e-12
        )


def test_switch_dr_interpolates_between_dm_and_dr(small: Small) -> None:
    """SwitchDR with tau=inf is DR and with tau=0 is DM, sample by sample."""
    args = (small.data, small.target, small.reward_model)
    np.testing.assert_array_equal(SwitchDR(tau=math.inf).per_sample(*args), DR().per_sample(*args))
    np.testing.assert_array_equal(SwitchDR(tau=0.0).per_sample(*args), DM().per_sample(*args))
    weights = small.target[np.arange(small.data.n), small.data.actions] / small.data.propensities
    tau = float(np.median(weights))
    middle = SwitchDR(tau=tau).per_sample(*args)
    dr, dm = DR().per_sample(*args), DM().per_sample(*args)
    np.testing.assert_array_equal(middle, np.where(weights <= tau, dr, dm))


def test_dr_family_with_a_zero_reward_model_reduces_to_ips(small: Small) -> None:
    """With q̂ = 0, DR is IPS, SNDR is SNIPS and clipped DR is clipped IPS."""
    zero = np.zeros_like(small.reward_model)
    d, t = small.data, small.target
    np.testing.assert_allclose(DR().per_sample(d, t, zero), IPS().per_sample(d, t), rtol=1e-14)
    assert SNDR().estimate(d, t, zero) == pytest.approx(SNIPS().estimate(d, t), rel=1e-12)
    np.testing.assert_allclose(
        DR(clip=2.0).per_sample(d, t, zero), IPS(clip=2.0).per_sample(d, t), rtol=1e-14
    )


def test_weight_clipping_caps_the_importance_weights(small: Small) -> None:
    """DR(clip=c) uses min(w, c); an infinite or huge clip changes nothing."""
    d, t, q = small.data, small.target, small.reward_model
    rows = np.arange(d.n)
    w = t[rows, d.actions] / d.propensities
    dm = (t * q).sum(axis=1)
    expected = dm + np.minimum(w, 1.5) * (d.rewards - q[rows, d.actions])
    np.testing.assert_allclose(DR(clip=1.5).per_sample(d, t, q), expected, rtol=1e-12)
    np.testing.assert_array_equal(DR(clip=1e12).per_sample(d, t, q), DR().per_sample(d, t, q))
    assert IPS(clip=1.5).estimate(d, t) == pytest.approx(
        float(np.mean(np.minimum(w, 1.5) * d.rewards))
    )


@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=lambda e: e.name)
def test_per_sample_mean_is_the_estimate(small: Small, estimator: Estimator) -> None:
    """Every estimator's per-sample values average to its point estimate."""
    args = (small.data, small.target, small.reward_model)
    values = estimator.per_sample(*args)
    assert values.shape == (small.data.n,)
    assert float(values.mean()) == pytest.approx(estimator.estimate(*args), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("estimator", ALL_ESTIMATORS, ids=lambda e: e.name)
def test_interval_contains_its_estimate(small: Small, estimator: Estimator, method: str) -> None:
    """Each interval is centred on (and contains) the point estimate, at the level asked."""
    args = (small.data, small.target, small.reward_model)
    result = estimator.interval(*args, method=method, level=0.9, n_boot=100, seed=1)
    assert result.estimate == estimator.estimate(*args)
    assert result.lower <= result.estimate <= result.upper
    assert result.lower < result.upper
    assert result.level == 0.9


def test_bootstrap_is_reproducible_with_a_seed(small: Small) -> None:
    """The same seed gives the same bootstrap interval; another seed gives another."""
    args = (small.data, small.target, small.reward_model)
    first = SNDR().interval(*args, n_boot=50, seed=11)
    assert SNDR().interval(*args, n_boot=50, seed=11) == first
    assert SNDR().interval(*args, n_boot=50, seed=12) != first


def test_evaluate_matches_separate_intervals(small: Small) -> None:
    """evaluate() shares one set of resamples and returns what each interval() returns."""
    args = (small.data, small.target, small.reward_model)
    together = evaluate(ALL_ESTIMATORS, *args, n_boot=60, seed=5)
    for estimator, result in zip(ALL_ESTIMATORS, together, strict=True):
        alone = estimator.interval(*args, n_boot=60, seed=5)
        assert result.estimate == alone.estimate
        assert result.lower == pytest.approx(alone.lower, abs=1e-12)
        assert result.upper == pytest.approx(alone.upper, abs=1e-12)


def test_bootstrap_renormalises_each_resample() -> None:
    """With constant rewards every resample's SNIPS (and SNDR with q̂ = 0) is that constant.

    Bootstrapping the globally normalised values w·r/mean(w) would instead give a wide
    interval, so a zero-width interval shows the normalisation is recomputed per resample.
    """
    sample = _simulate(np.random.default_rng(4), 800)
    d = sample.data
    data = LoggedData(d.actions, np.full(d.n, 0.7), d.propensities, d.mask)
    target = TARGETS["softmax"][sample.types]
    for estimator in (SNIPS(), SNDR()):
        result = estimator.interval(
            data, target, np.zeros((d.n, K)), method="bootstrap", n_boot=200, seed=0
        )
        assert result.estimate == pytest.approx(0.7, rel=1e-12)
        assert result.lower == pytest.approx(0.7, rel=1e-12)
        assert result.upper == pytest.approx(0.7, rel=1e-12)
    assert IPS().interval(data, target, method="bootstrap", n_boot=200, seed=0).width > 0.01


def test_resample_sums_are_multinomial_resamples() -> None:
    """Every resample draws exactly n rows, and the spread of a resampled mean is ~ sd/sqrt(n)."""
    rng = np.random.default_rng(9)
    values = rng.normal(size=70_000)  # spans two counting blocks
    sums = resample_sums(np.column_stack([np.ones_like(values), values]), n_boot=300, seed=1)
    np.testing.assert_allclose(sums[:, 0], values.shape[0])
    spread = float(np.std(sums[:, 1] / values.shape[0]))
    assert spread == pytest.approx(values.std() / math.sqrt(values.shape[0]), rel=0.15)


def test_plain_intervals_on_known_values() -> None:
    """normal, Bernstein and bootstrap intervals of a mean: centred, ordered, hand-checked."""
    values = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0])
    mean, sd = values.mean(), values.std(ddof=1)
    normal = normal_interval(values, level=0.95)
    half = 1.959963984540054 * sd / math.sqrt(8)
    assert (normal.lower, normal.upper) == pytest.approx((mean - half, mean + half), rel=1e-12)
    bern = bernstein_interval(values, level=0.95)
    log_term = math.log(4 / 0.05)
    b_half = math.sqrt(2 * sd**2 * log_term / 8) + 7 * 1.0 * log_term / (3 * 7)
    assert (bern.lower, bern.upper) == pytest.approx((mean - b_half, mean + b_half), rel=1e-12)
    boot = bootstrap_interval(values, level=0.95, n_boot=500, seed=2)
    assert 0.0 <= boot.lower <= mean <= boot.upper <= 1.0


def test_diagnostics_on_a_hand_computed_log() -> None:
    """ESS, max weight, unsupported share and uncovered mass match a worked example."""
    mask = np.array([[True, True, False], [True, True, True], [True, True, True]])
    logging = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [1.0, 0.0, 0.0]])
    actions = np.array([0, 2, 0])
    data = LoggedData(actions, np.zeros(3), logging[np.arange(3), actions], mask, logging)
    target = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    result = diagnostics(data, target)
    weights = np.array([2.0, 0.0, 0.5])
    assert result.ess == pytest.approx(weights.sum() ** 2 / (weights**2).sum())
    assert result.max_weight == 2.0
    assert result.unsupported_share == pytest.approx(1 / 3)
    assert result.uncovered_mass == pytest.approx(0.5 / 3)
    same = diagnostics(data, logging)
    assert (same.ess, same.max_weight, same.unsupported_share) == (3.0, 1.0, 0.0)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2, 40),
    k=st.integers(1, 5),
)
def test_invariants_on_random_logs(seed: int, n: int, k: int) -> None:
    """On random logs: SNIPS lies within the observed reward range, intervals hold estimates."""
    small = _small(seed, n, k)
    args = (small.data, small.target, small.reward_model)
    rows = np.arange(n)
    supported = small.target[rows, small.data.actions] > 0
    if supported.any():
        snips = SNIPS().estimate(small.data, small.target)
        rewards = small.data.rewards[supported]
        assert rewards.min() - 1e-9 <= snips <= rewards.max() + 1e-9
    for estimator in (IPS(), DM(), DR(), SwitchDR(tau=2.0)):
        for method in METHODS:
            result = estimator.interval(*args, method=method, n_boot=20, seed=seed)
            assert result.lower <= result.estimate <= result.upper
            assert math.isfinite(result.lower)
            assert math.isfinite(result.upper)


# ---------------------------------------------------------------------------------------------
# Optional cross-checks against independent implementations.


def test_ips_and_snips_agree_with_vw_estimators(small: Small) -> None:
    """IPS, SNIPS and the normal IPS interval match vw-estimators to 1e-9."""
    ips_module = pytest.importorskip("estimators.bandits.ips")
    snips_module = pytest.importorskip("estimators.bandits.snips")
    gaussian_module = pytest.importorskip("estimators.bandits.gaussian")
    d = small.data
    p_pred = small.target[np.arange(d.n), d.actions]
    ips, snips, gauss = ips_module.Estimator(), snips_module.Estimator(), gaussian_module.Interval()
    for p_log, r, p in zip(d.propensities, d.rewards, p_pred, strict=True):
        ips.add_example(float(p_log), float(r), float(p))
        snips.add_example(float(p_log), float(r), float(p))
        gauss.add_example(float(p_log), float(r), float(p))
    assert IPS().estimate(d, small.target) == pytest.approx(ips.get(), abs=1e-9)
    assert SNIPS().estimate(d, small.target) == pytest.approx(snips.get(), abs=1e-9)
    ours = IPS().interval(d, small.target, method="normal", level=0.95)
    lower, upper = gauss.get(alpha=0.05)
    assert (ours.lower, ours.upper) == pytest.approx((lower, upper), abs=1e-9)


_TORCH_STUBS = (
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.optim",
    "torch.utils",
    "torch.utils.data",
)


class _StubType(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return cls


class _Stub(metaclass=_StubType):
    """Stands in for any torch class obp names at import time (its estimators never call it)."""


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__getattr__ = lambda attr: _Stub  # type: ignore[method-assign]
    return module


@pytest.fixture(scope="module")
def obp_ope() -> Any:
    """obp.ope, importing obp with a throw-away torch stub when torch is not installed."""
    inserted: list[str] = []
    try:
        if importlib.util.find_spec("torch") is None:
            for name in _TORCH_STUBS:
                sys.modules[name] = _stub_module(name)
                inserted.append(name)
        ope = pytest.importorskip("obp.ope")
    finally:
        for name in inserted:
            sys.modules.pop(name, None)
    return ope


def test_dm_dr_sndr_switch_agree_with_obp(small: Small, obp_ope: Any) -> None:
    """DM, DR, clipped DR, SNDR, Switch-DR, IPS and SNIPS match obp 0.5.7 to 1e-9."""
    d, t, q = small.data, small.target, small.reward_model
    common = {"reward": d.rewards, "action": d.actions, "action_dist": t[:, :, None]}
    with_model = {**common, "estimated_rewards_by_reg_model": q[:, :, None]}
    pairs: list[tuple[Estimator, Any, dict[str, Any]]] = [
        (DM(), obp_ope.DirectMethod(), with_model),
        (DR(), obp_ope.DoublyRobust(), with_model),
        (DR(clip=2.0), obp_ope.DoublyRobust(lambda_=2.0), with_model),
        (SNDR(), obp_ope.SelfNormalizedDoublyRobust(), with_model),
        (SwitchDR(tau=1.5), obp_ope.SwitchDoublyRobust(lambda_=1.5), with_model),
        (SwitchDR(tau=0.0), obp_ope.SwitchDoublyRobust(lambda_=0.0), with_model),
        (IPS(), obp_ope.InverseProbabilityWeighting(), common),
        (IPS(clip=2.0), obp_ope.InverseProbabilityWeighting(lambda_=2.0), common),
        (SNIPS(), obp_ope.SelfNormalizedInverseProbabilityWeighting(), common),
    ]
    for ours, theirs, kwargs in pairs:
        expected = theirs.estimate_policy_value(pscore=d.propensities, **kwargs)
        assert ours.estimate(d, t, q) == pytest.approx(expected, abs=1e-9), ours
