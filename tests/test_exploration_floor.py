"""The exploration floor (``[policy] min_probability``): every eligible model keeps at least
the floor on explorable requests, for every policy kind, and the floored probability is the
one sampled, logged and learned."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_router import RecordingPolicy

from banditroute.audit import AuditChain
from banditroute.catalog import ModelSpec
from banditroute.config import Settings, settings_from_mapping
from banditroute.decision_ids import sample_index
from banditroute.decisions import Disposition, FeedbackReport, RouteQuery
from banditroute.errors import ConfigError
from banditroute.evaluation.logdata import PROBABILITY_ATOL
from banditroute.features import PromptFeatures
from banditroute.policies.base import Policy
from banditroute.policies.costaware import THOMPSON_DRAWS
from banditroute.policies.factory import build_policy
from banditroute.policies.floor import apply_floor
from banditroute.reload import config_change
from banditroute.router import Router
from banditroute.store.memory import MemoryLog

FLOOR = 0.02
PROMPTS = (
    "What is the boiling point of water at sea level?",
    "Write a Python function that reverses a linked list.",
    "Summarise the plot of Hamlet in two sentences.",
)


def _settings(floor: float = FLOOR, **sections: Any) -> Settings:
    return settings_from_mapping({"policy": {"min_probability": floor}, **sections})


@pytest.mark.parametrize(
    "probs",
    [[1.0, 0.0, 0.0, 0.0], [0.7, 0.2, 0.1, 0.0], [0.97, 0.01, 0.01, 0.01], [0.25] * 4],
)
@pytest.mark.parametrize("floor", [0.0, 0.005, 0.05, 0.25])
def test_the_floor_lifts_the_least_likely_model_exactly_to_it(
    probs: list[float], floor: float
) -> None:
    """The floored vector sums to 1, its least value is the floor (or above, when the policy
    was already above it, in which case it is unchanged), and the order of the models stays."""
    p = np.array(probs)
    out = apply_floor(p, floor)
    assert out.sum() == pytest.approx(1.0)
    assert out.min() >= floor - 1e-12
    if p.min() >= floor:
        np.testing.assert_array_equal(out, p)
    else:
        assert out.min() == pytest.approx(floor)
    assert list(np.argsort(-out, kind="stable")) == list(np.argsort(-p, kind="stable"))


def test_a_floor_above_one_over_k_is_refused() -> None:
    """No distribution over K models can give each more than 1/K."""
    with pytest.raises(ValueError, match="exceeds 1/4"):
        apply_floor(np.array([1.0, 0.0, 0.0, 0.0]), 0.3)


@pytest.mark.parametrize("kind", ["costaware", "vw", "linucb", "uniform", "fixed"])
def test_every_policy_kind_logs_floored_probabilities(kind: str) -> None:
    """For each policy kind, each decision's logged distribution gives every eligible model at
    least the floor and sums to 1, and the decision's probability is the logged one of its
    model (the true propensity)."""
    settings = _settings()
    policy = build_policy(dataclasses.replace(settings.policy, kind=kind), semantic=True)  # type: ignore[arg-type]
    log = MemoryLog()
    router = Router(settings, policy, log)
    for prompt in PROMPTS * 3:
        decision = router.route(RouteQuery(prompt=prompt))
        router.feedback(FeedbackReport(decision.decision_id, quality=0.8, cost_usd=0.001))
    assert len(log.decisions) == 9
    for record in log.decisions:
        probs = np.array(record.probabilities)
        assert len(probs) >= 2
        assert probs.min() >= FLOOR - 1e-12
        assert probs.sum() == pytest.approx(1.0)
        assert record.probability == probs[record.eligible.index(record.model)]


def test_the_fixed_policy_without_a_floor_stays_one_hot() -> None:
    """With the floor off (the default) a deterministic policy's vector is unchanged."""
    settings = _settings(0.0)
    policy = build_policy(dataclasses.replace(settings.policy, kind="fixed"), semantic=True)
    log = MemoryLog()
    Router(settings, policy, log).route(RouteQuery(prompt=PROMPTS[0]))
    assert sorted(log.decisions[0].probabilities)[-1] == 1.0


def test_the_policy_learns_with_the_floored_probability() -> None:
    """What the policy learns is weighted by the probability the decision was really made with."""
    policy = RecordingPolicy()  # weights 1..11: the least likely model's 1/66 is below 0.02
    log = MemoryLog()
    router = Router(_settings(), policy, log)
    decision = router.route(RouteQuery(prompt=PROMPTS[0]))
    router.feedback(FeedbackReport(decision.decision_id, quality=1.0))
    assert min(log.decisions[0].probabilities) == pytest.approx(FLOOR)
    assert [p for _, p, _ in policy.learned] == [decision.probability]
    assert decision.probability == log.decisions[0].probability


def test_private_requests_get_no_floor() -> None:
    """Requests carrying personal data (or secrets: the same rule) are never explored: the
    greedy choice with probability 1, whatever the floor."""
    log = MemoryLog()
    router = Router(_settings(), RecordingPolicy(), log)
    decision = router.route(RouteQuery(prompt=PROMPTS[0], data_classification="pii"))
    assert decision.probability == 1.0
    assert sorted(log.decisions[0].probabilities)[-1] == 1.0


def test_a_named_policy_inherits_the_floor_and_shadows_are_floored() -> None:
    """``[policies.NAME]`` take ``[policy]``'s floor unless they set one; a shadow policy's
    logged distribution is floored as it would be were it live."""
    settings = _settings(
        policies={"inherits": {"kind": "fixed", "fixed_model": "gpt-4-1106-preview"},
                  "own": {"kind": "uniform", "min_probability": 0.05}},
        tenants=[{"name": "acme", "shadow_policies": ["inherits"]}],
    )  # fmt: skip
    assert settings.policies["inherits"].min_probability == FLOOR
    assert settings.policies["own"].min_probability == 0.05
    policies: dict[str, Policy] = {
        "inherits": build_policy(settings.policies["inherits"], semantic=True),
        "own": build_policy(settings.policies["own"], semantic=True),
    }
    log = MemoryLog()
    router = Router(settings, RecordingPolicy(), log, policies=policies)
    router.route(RouteQuery(prompt=PROMPTS[0], tenant="acme"))
    shadow = log.decisions[0].shadow["inherits"]["probabilities"]
    assert min(shadow) == pytest.approx(FLOOR)
    assert max(shadow) < 1.0


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"policy": {"min_probability": -0.01}}, "policy.min_probability"),
        ({"policy": {"min_probability": 0.5}}, "policy.min_probability"),
        ({"policy": {"min_probability": float("nan")}}, "policy.min_probability"),
        ({"policy": {"min_probability": "high"}}, "policy.min_probability"),
        ({"policies": {"b": {"kind": "uniform", "min_probability": 0.2}}},
         "policies.b.min_probability"),
    ],
)  # fmt: skip
def test_a_floor_out_of_range_is_a_config_error_naming_the_key(
    sections: dict[str, Any], key: str
) -> None:
    """The floor must be a number in [0, 1/(number of models)] (11 models by default)."""
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(sections)
    assert caught.value.field == key


def test_a_reload_may_change_the_floor_and_the_next_route_uses_it() -> None:
    """``min_probability`` is read at each decision, so a reload changes it without a restart
    (the rest of ``[policy]`` still needs one)."""
    old, new = _settings(0.0), _settings(0.05)
    assert config_change(old, new).keys == ("policy.min_probability",)
    log = MemoryLog()
    router = Router(old, RecordingPolicy(), log)
    router.route(RouteQuery(prompt=PROMPTS[0]))
    router.reload(new)
    router.route(RouteQuery(prompt=PROMPTS[0]))
    assert min(log.decisions[0].probabilities) == pytest.approx(1 / 66)  # weights 1..11
    assert min(log.decisions[1].probabilities) == pytest.approx(0.05)


def test_settings_copied_with_a_new_policy_section_use_its_floor() -> None:
    """``replace(settings, policy=...)`` (command-line overrides, the simulator) leaves
    ``policies["default"]`` as it was; the default arm's floor is the new ``policy``'s."""
    base = _settings(0.0)
    settings = dataclasses.replace(
        base, policy=dataclasses.replace(base.policy, min_probability=0.05)
    )
    log = MemoryLog()
    Router(settings, RecordingPolicy(), log).route(RouteQuery(prompt=PROMPTS[0]))
    assert min(log.decisions[0].probabilities) == pytest.approx(0.05)


@st.composite
def _distributions(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    """A policy's distribution over 2..30 models, as the router gets it (normalised): either
    Thompson counts out of 1,024 draws (exact zeros, multiples of 1/1024) or arbitrary weights
    with zeros and values down to 1e-300; and a floor in (0, 1/K]."""
    k = draw(st.integers(2, 30))
    if draw(st.booleans()):
        cuts = sorted(
            draw(st.lists(st.integers(0, THOMPSON_DRAWS), min_size=k - 1, max_size=k - 1))
        )
        counts = np.diff([0, *cuts, THOMPSON_DRAWS]).astype(np.float64)
        probs = counts / THOMPSON_DRAWS
    else:
        weight = st.one_of(st.just(0.0), st.floats(1e-300, 1.0), st.floats(0.0, 1e-12))
        weights = np.array(draw(st.lists(weight, min_size=k, max_size=k)))
        if weights.sum() <= 0:
            weights[draw(st.integers(0, k - 1))] = 1.0
        probs = weights / weights.sum()
    floor = draw(st.one_of(st.just(1.0 / k), st.floats(1e-12, 1.0 / k)))
    return probs, floor


@settings(max_examples=300, deadline=None)
@given(_distributions(), st.text(min_size=1, max_size=32))
def test_a_floored_vector_is_a_valid_propensity_vector_for_every_policy_output(
    case: tuple[np.ndarray, float], decision_id: str
) -> None:
    """Whatever the policy gives (exact zeros, values near the smallest float, a floor of
    exactly 1/K), the floored vector is finite, each entry in (0, 1] and at least the floor (to
    rounding), sums to 1 within the tolerance replay checks logged vectors with, and keeps the
    policy's order; the sampler draws an entry with a positive probability, so what the policy
    learns with is a valid propensity."""
    probs, floor = case
    out = apply_floor(probs, floor)
    assert np.isfinite(out).all()
    assert (out > 0).all()
    assert (out <= 1).all()
    assert out.min() >= floor * (1 - 1e-9)
    assert abs(float(out.sum()) - 1.0) <= PROBABILITY_ATOL / 1000
    assert (np.diff(out[np.argsort(-probs, kind="stable")]) <= 1e-15).all()
    assert 0 < out[sample_index(out, decision_id)] <= 1


class _WeightsPolicy(Policy):
    """A test policy giving fixed weights (zeros allowed), repeated over however many arms."""

    name = "weights"

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.weights = np.array(weights)

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> np.ndarray:
        weights = np.resize(self.weights, len(arms))
        return weights if weights.sum() > 0 else np.eye(len(arms))[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(1e-300, 1.0)), min_size=11, max_size=11),
    st.one_of(st.just(1 / 11), st.floats(1e-9, 1 / 11)),
    st.booleans(),
    st.booleans(),
)
def test_routes_with_a_floor_log_valid_vectors_and_learn_from_their_feedback(
    weights: list[float], floor: float, session: bool, shadow: bool
) -> None:
    """With any floor up to 1/K, an audited router floors any policy output (and its shadow's)
    without failing, in a session (sticky) or not; every logged vector passes replay's
    checks (sums to 1, the propensity is the chosen model's entry) and every Feedback is
    learned (the probability is in (0, 1])."""
    sections: dict[str, Any] = {"policy": {"min_probability": floor}}
    policies: dict[str, Policy] = {}
    if shadow:
        sections["policies"] = {"shadow": {"kind": "uniform"}}
        sections["tenants"] = [{"name": "default", "shadow_policies": ["shadow"]}]
    config = settings_from_mapping(sections)
    if shadow:
        policies["shadow"] = build_policy(
            config.policies["shadow"], semantic=config.features.semantic
        )
    log = MemoryLog()
    audit = AuditChain(sink=log.append_audit)
    router = Router(config, _WeightsPolicy(weights), log, policies=policies, audit=audit)
    for i, prompt in enumerate(PROMPTS * 2):
        query = RouteQuery(prompt=prompt, session_id="s1" if session else "")
        decision = router.route(query)
        result = router.feedback(FeedbackReport(decision.decision_id, quality=i % 2))
        assert result.disposition == Disposition.LEARNED
    for record in log.decisions:
        probs = np.array(record.probabilities)
        assert abs(probs.sum() - 1.0) <= PROBABILITY_ATOL
        assert record.probability == probs[record.eligible.index(record.model)]
        assert 0 < record.probability <= 1
