"""The exploration floor (``[policy] min_probability``): every eligible model keeps at least
the floor on explorable requests, for every policy kind, and the floored probability is the
one sampled, logged and learned."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from test_router import RecordingPolicy

from banditroute.config import Settings, settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import ConfigError
from banditroute.policies.base import Policy
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
    policy = build_policy(dataclasses.replace(settings.policy, kind=kind))  # type: ignore[arg-type]
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
    policy = build_policy(dataclasses.replace(settings.policy, kind="fixed"))
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
        "inherits": build_policy(settings.policies["inherits"]),
        "own": build_policy(settings.policies["own"]),
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
