"""A/B arms and shadow policies through the gRPC interface: a tenant's experiment splits its
traffic between named policies, sticky per user tag, and logs the arm; shadow policies decide
on live traffic without serving, and their choice is logged beside the served one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from banditroute.config import load_settings, settings_from_mapping
from banditroute.errors import ConfigError
from banditroute.server.app import Service

CATALOG = load_settings().catalog
GPT4 = "gpt-4-1106-preview"
USERS = [f"user-{i}" for i in range(16)]
ROUTES_PER_USER = 3
PROMPT = "Explain why the sea is salty."


def _experiment(arms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "policies": {"b": {"kind": "uniform"}},
        "tenants": [{"name": "default", "experiment": {"key_tag": "user", "arms": arms}}],
    }


HALF_AND_HALF = [{"policy": "default", "weight": 0.5}, {"policy": "b", "weight": 0.5}]


def test_experiment_arm_is_sticky_per_user_and_both_arms_serve(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With two arms (the default VW policy and a uniform policy "b") keyed on tags.user,
    every route of one user gets the same experiment_arm and that arm's policy version;
    across 16 users both arms occur; the decision log records the arm of every decision."""
    service = start_service(_experiment(HALF_AND_HALF))
    client = api(service)
    arms: dict[str, str] = {}
    logged: dict[str, str] = {}
    for round_ in range(ROUTES_PER_USER):
        for user in USERS:
            response = client.route(prompt=f"{PROMPT} ({round_})", tags={"user": user})
            assert response.experiment_arm == arms.setdefault(user, response.experiment_arm)
            prefix = "costaware:" if response.experiment_arm == "default" else "uniform:"
            assert response.policy_version.startswith(prefix)
            logged[response.decision_id] = response.experiment_arm
    assert set(arms.values()) == {"default", "b"}
    service.stop()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        rows = dict(con.execute("SELECT decision_id, arm FROM decisions").fetchall())
    assert rows == logged


def test_feedback_teaches_the_arm_that_decided(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """Feedback on a decision updates the policy of its arm only: the arm's version counts
    one more update, the other arm's does not move."""
    client = api(start_service(_experiment(HALF_AND_HALF)))
    by_arm: dict[str, str] = {}
    for user in USERS:
        by_arm.setdefault(client.route(tags={"user": user}).experiment_arm, user)
    assert set(by_arm) == {"default", "b"}

    def version(arm: str) -> str:
        return str(client.route(tags={"user": by_arm[arm]}).policy_version)

    before = {arm: version(arm) for arm in by_arm}
    decision = client.route(tags={"user": by_arm["b"]})
    client.feedback(decision_id=decision.decision_id, quality=1.0)
    after = {arm: version(arm) for arm in by_arm}
    assert after["default"] == before["default"]
    assert int(after["b"].rsplit(":", 1)[1]) == int(before["b"].rsplit(":", 1)[1]) + 1


def test_single_arm_experiment_takes_every_request(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """A single-arm experiment sends every user to that arm, and requests without the key
    tag (split on their request_id or decision id) as well."""
    client = api(start_service(_experiment([{"policy": "b", "weight": 1.0}])))
    assert {client.route(tags={"user": u}).experiment_arm for u in USERS[:5]} == {"b"}
    assert client.route().experiment_arm == "b"
    assert client.route(request_id="abc").experiment_arm == "b"


def test_shadow_policy_is_logged_but_not_served(
    start_service: Callable[..., Service], api: Callable[..., Any]
) -> None:
    """With shadow_policies = ["b"] (uniform) and a fixed live policy, every response serves
    the live policy's model with its probability, and every decision row has a shadow entry
    for "b" with its model, the probability of that model and the whole probability vector
    over the eligible models; the shadow's picks vary while the served model does not."""
    config = {
        # No exploration floor: the live policy serves GPT-4 alone.
        "policy": {"kind": "fixed", "fixed_model": GPT4, "min_probability": 0.0},
        "policies": {"b": {"kind": "uniform"}},
        "tenants": [{"name": "default", "shadow_policies": ["b"]}],
    }
    service = start_service(config)
    client = api(service)
    served = [client.route(prompt=f"{PROMPT} #{i}") for i in range(20)]
    assert {(r.model, r.probability, r.experiment_arm) for r in served} == {(GPT4, 1.0, "default")}
    service.stop()
    with duckdb.connect(str(service.settings.log.path), read_only=True) as con:
        rows = con.execute("SELECT model, eligible, shadow FROM decisions").fetchall()
    assert len(rows) == len(served)
    picks = set()
    for model, eligible, shadow_json in rows:
        assert model == GPT4
        shadow = json.loads(shadow_json)
        assert set(shadow) == {"b"}
        entry = shadow["b"]
        assert entry["probabilities"] == pytest.approx([1 / len(eligible)] * len(eligible))
        assert entry["model"] in eligible
        assert entry["probability"] == entry["probabilities"][eligible.index(entry["model"])]
        assert entry["version"].startswith("uniform:")
        picks.add(entry["model"])
    assert len(picks) > 1


@pytest.mark.parametrize(
    ("tenant", "text"),
    [
        ({"experiment": {"arms": [{"policy": "nope"}]}}, "arms"),
        ({"experiment": {"arms": [{"policy": "b", "weight": 0}]}}, "weights"),
        ({"experiment": {"arms": []}}, "at least one arm"),
        ({"experiment": {"key_tag": "user"}}, "arms"),
        ({"shadow_policies": ["nope"]}, "shadow_policies"),
        ({"shadow_policies": "b"}, "shadow_policies"),
    ],
)
def test_invalid_experiment_or_shadow_is_a_config_error(tenant: dict[str, Any], text: str) -> None:
    """An experiment arm naming an unknown policy or with a non-positive weight, an
    experiment without arms, and a shadow list that is not a list of known policies are
    ConfigErrors naming the tenant's key."""
    config = {"policies": {"b": {"kind": "uniform"}}, "tenants": [{"name": "t", **tenant}]}
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping(config)
    assert caught.value.message.startswith("tenants.t")
    assert text in caught.value.message


def test_feedback_after_a_restart_without_the_arms_policy_is_accepted(
    start_service: Callable[..., Service], api: Callable[..., Any], tmp_path: Path
) -> None:
    """A decision made by arm "b" and still pending when the server restarts with a
    configuration that no longer has policy "b" (experiment over) still takes its feedback:
    acknowledged and logged, not an internal error."""
    log = {"path": str(tmp_path / "shared.duckdb")}
    first = start_service({**_experiment([{"policy": "b", "weight": 1.0}]), "log": log})
    decision = api(first).route(tags={"user": "u1"})
    assert decision.experiment_arm == "b"
    first.stop()
    second = start_service({"log": log})
    assert second.restored_pending == 1
    ack = api(second).feedback(decision_id=decision.decision_id, quality=1.0)
    assert ack.feedback_count == 1
    second.stop()
    with duckdb.connect(log["path"], read_only=True) as con:
        rows = con.execute("SELECT decision_id FROM feedback").fetchall()
    assert rows == [(decision.decision_id,)]
