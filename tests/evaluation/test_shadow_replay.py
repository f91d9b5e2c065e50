"""Shadow policies run on live traffic without serving it; replay compares them with the live
policy from what they logged beside each decision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from banditroute import cli
from banditroute.config import settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import InvalidArgument
from banditroute.evaluation.candidates import parse_candidate, shadow_distribution
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.replay import replay
from banditroute.objectives import parse_objective
from banditroute.policies.factory import build_policy
from banditroute.router import Router
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.reader import open_log

MODELS = ("gpt-3.5-turbo-1106", "mistralai/mixtral-8x7b-chat", "zero-one-ai/Yi-34B-Chat")


def _write_log(path: Path, decisions: int = 300) -> None:
    """Route prompts for a tenant whose shadow ``explorer`` is a uniform policy, with feedback."""
    settings = settings_from_mapping(
        {
            "policy": {"kind": "fixed", "fixed_model": MODELS[0]},
            "policies": {"explorer": {"kind": "uniform"}},
            "tenants": [{"name": "default", "shadow_policies": ["explorer"]}],
        }
    )
    clock = [1_700_000_000.0]
    log = DuckDBLog(path)
    policies = {
        n: build_policy(s, semantic=settings.features.semantic)
        for n, s in settings.policies.items()
    }
    router = Router(settings, policies.pop("default"), log, policies=policies,
                    clock=lambda: clock[0])  # fmt: skip
    rng = np.random.default_rng(3)
    for index in range(decisions):
        clock[0] += 1.0
        decision = router.route(
            RouteQuery(prompt=f"What is the answer to question {index}?", candidate_models=MODELS)
        )
        quality = float(rng.random() < (0.9 if decision.model == MODELS[0] else 0.5))
        router.feedback(FeedbackReport(decision.decision_id, quality=quality, cost_usd=0.0))
    log.close()


def test_a_uniform_shadow_is_estimated_exactly_like_the_uniform_candidate(tmp_path: Path) -> None:
    """The logged distribution of a uniform shadow equals the uniform target on every
    decision, so replay's estimates for ``shadow:explorer`` and ``uniform`` are identical."""
    path = tmp_path / "log.duckdb"
    _write_log(path)
    log = load_log(open_log(path))
    settings = settings_from_mapping({})
    objective = parse_objective("quality=1,cost=0,latency=0", settings.objectives)
    shadow = shadow_distribution(open_log(path).connection, "explorer", log)
    assert shadow.shape == (log.n, log.n_actions)
    np.testing.assert_allclose(shadow.sum(axis=1), 1.0)
    specs = [parse_candidate("shadow:explorer"), parse_candidate("uniform")]
    result = replay(
        log, specs, objective, settings, method="normal", seed=0,
        shadow=lambda name, data: shadow_distribution(open_log(path).connection, name, data),
    )  # fmt: skip
    by_name = {c.name: c for c in result.candidates}
    for estimator, interval in by_name["shadow:explorer"].estimates.items():
        assert interval.estimate == pytest.approx(by_name["uniform"].estimates[estimator].estimate)


def test_the_cli_replays_a_shadow_from_the_log(tmp_path: Path) -> None:
    """``banditroute replay --candidate shadow:NAME`` reads the shadow from ``--log``."""
    path, out = tmp_path / "log.duckdb", tmp_path / "replay.json"
    _write_log(path, decisions=100)
    argv = ["replay", "--log", str(path), "--candidate", "shadow:explorer", "--candidate",
            "uniform", "--interval", "normal", "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    estimates = {c["name"]: c["estimates"] for c in json.loads(out.read_text())["candidates"]}
    for estimator, interval in estimates["shadow:explorer"].items():
        assert interval["value"] == pytest.approx(estimates["uniform"][estimator]["value"])


def test_a_shadow_that_was_not_logged_is_an_error_naming_the_argument(tmp_path: Path) -> None:
    """Asking for a shadow no decision carries is an InvalidArgument naming --candidate."""
    path = tmp_path / "log.duckdb"
    _write_log(path, decisions=20)
    log = load_log(open_log(path))
    with pytest.raises(InvalidArgument, match="--candidate") as caught:
        shadow_distribution(open_log(path).connection, "nobody", log)
    assert caught.value.field == "--candidate"


def test_shadow_spec_needs_a_name() -> None:
    """``shadow:`` without a name is rejected, naming --candidate."""
    with pytest.raises(InvalidArgument, match="--candidate"):
        parse_candidate("shadow:")
