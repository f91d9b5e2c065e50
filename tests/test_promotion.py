"""Gated promotion in the core (banditroute.promotion, Router.promote/rollback) and the
``banditroute promote`` command's dry run on a log."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import pytest

from banditroute.cli import main
from banditroute.config import Settings, load_settings, settings_from_mapping
from banditroute.decisions import FeedbackReport, RouteQuery
from banditroute.errors import FailedPrecondition
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.logdata import load_log
from banditroute.policies.costaware import CostAwarePolicy
from banditroute.policies.fixed import FixedPolicy
from banditroute.policies.uniform import UniformPolicy
from banditroute.promotion import warm_policy
from banditroute.router import Router
from banditroute.store.duckdb_log import DuckDBLog
from banditroute.store.memory import MemoryLog
from banditroute.store.reader import open_log

QUALITY = {"alpha": 1.0, "beta": 0.1, "gamma": 0.1}
CONFIG = "\n".join(
    f'[[models]]\nid = "{name}"\nprovider = "p{i}"\ninput_usd_per_mtok = 0.1\n'
    "output_usd_per_mtok = 0.1\n"
    for i, name in enumerate(QUALITY)
)
DECISIONS = 240  # fixed:alpha under uniform logging of 3 models: ESS about 80


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A three-model configuration file."""
    path = tmp_path / "promote.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


@pytest.fixture
def settings(config: Path) -> Settings:
    """The three-model settings."""
    return load_settings(config)


def _serve(router: Router) -> None:
    """DECISIONS decisions with feedback: alpha is clearly the best model."""
    for i in range(DECISIONS):
        decision = router.route(RouteQuery(prompt=f"Question {i}: what is {i} plus {i}?"))
        router.feedback(
            FeedbackReport(decision.decision_id, quality=QUALITY[decision.model], cost_usd=1e-4)
        )


@pytest.fixture
def log_path(tmp_path: Path, settings: Settings) -> Path:
    """A DuckDB log of a uniform-logging router."""
    path = tmp_path / "promote.duckdb"
    event_log = DuckDBLog(path, sync_feedback=False)
    ids = itertools.count()
    _serve(Router(settings, UniformPolicy(), event_log, new_id=lambda: f"d{next(ids):05d}"))
    event_log.close()
    return path


def test_the_dry_run_passes_a_clearly_better_candidate_and_refuses_a_worse_one(
    log_path: Path, config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``promote --log`` exits 0 when the candidate's DR lower bound beats the live policy's
    estimate plus the margin (and writes the warmed candidate's snapshot), 1 when it does not;
    both print the evidence."""
    snapshot = tmp_path / "candidate.snapshot"
    base = ["promote", "--log", str(log_path), "--config", str(config), "--margin", "0.05"]
    assert main([*base, "--candidate", "fixed:alpha", "--save-snapshot", str(snapshot)]) == 0
    out = capsys.readouterr().out
    assert "verdict: promoted" in out
    assert f"decisions: {DECISIONS}" in out
    assert snapshot.read_bytes()
    assert main([*base, "--candidate", "fixed:beta"]) == 1
    assert "verdict: refused" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "argument"),
    [
        (["--candidate", "bogus"], "--candidate"),
        (["--candidate", "shadow:x"], "--candidate"),
        (["--candidate", "uniform", "--margin", "-1"], "--margin"),
        (["--candidate", "uniform", "--tolerance", "0"], "--tolerance"),
        (["--candidate", "uniform", "--tolerance", "1.5"], "--tolerance"),
        (["--candidate", "uniform", "--tolerance", "nan"], "--tolerance"),
        (["--rollback"], "--rollback"),
        (["--candidate", "uniform", "--server", "127.0.0.1:1"], "--log"),
    ],
)
def test_bad_arguments_are_errors_naming_the_argument(
    log_path: Path, config: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    argument: str,
) -> None:  # fmt: skip
    """A malformed candidate, a shadow without a server, a negative margin, a tolerance outside
    (0, 1], a rollback without a server, and both --log and --server exit 2
    with one line naming the argument."""
    code = main(["promote", "--log", str(log_path), "--config", str(config), *extra])
    assert code == 2
    assert f"error: {argument}" in capsys.readouterr().err


def test_a_better_candidate_known_less_precisely_than_the_tolerance_is_refused(
    tmp_path: Path, settings: Settings, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """alpha earns 0.5 or 1.0 by turns (beta and gamma 0.1): fixed:alpha is clearly better
    than the live uniform policy, but 240 uniformly logged decisions give its DR interval a
    half-width near 7% of its estimate: at the default tolerance (2%) the promotion is refused
    with the width in the reason; at ``--tolerance 0.5`` it clears."""
    path = tmp_path / "noisy.duckdb"
    event_log = DuckDBLog(path, sync_feedback=False)
    router = Router(settings, UniformPolicy(), event_log)
    for i in range(DECISIONS):
        decision = router.route(RouteQuery(prompt=f"Question {i}: what is {i} plus {i}?"))
        quality = (0.5 if i % 2 else 1.0) if decision.model == "alpha" else 0.1
        router.feedback(FeedbackReport(decision.decision_id, quality=quality, cost_usd=1e-4))
    event_log.close()
    base = ["promote", "--log", str(path), "--config", str(config), "--candidate", "fixed:alpha"]
    assert main(base) == 1
    out = capsys.readouterr().out
    assert "verdict: refused: the log cannot answer for the candidate: DR interval half-width" in (
        out
    )
    assert "> tolerance 2.0%" in out
    assert main([*base, "--tolerance", "0.5"]) == 0
    assert "verdict: promoted" in capsys.readouterr().out


def test_a_trained_candidate_goes_live_having_learned_the_log(
    log_path: Path, settings: Settings
) -> None:
    """The warmed candidate learns every logged decision with an outcome before serving."""
    source = open_log(log_path)
    try:
        log = load_log(source, with_features=True)
    finally:
        source.connection.close()
    policy = warm_policy(parse_candidate("costaware"), log, settings, settings.objective(""))
    assert isinstance(policy, CostAwarePolicy)
    assert policy.updates == DECISIONS


def test_rollback_restores_the_previous_policy_object_and_a_promoted_shadow_learns_once(
    config: Path,
) -> None:
    """A promoted shadow policy is the arm's policy and still a shadow: each outcome is learned
    into it once. Rollback puts back the very policy object promoted away; without a
    promotion it is FailedPrecondition."""
    settings = settings_from_mapping(
        {**tomllib.loads(config.read_text()), "policies": {"shadow": {"kind": "costaware"}},
         "tenants": [{"name": "acme", "shadow_policies": ["shadow"]}]}
    )  # fmt: skip
    live, shadow = UniformPolicy(), CostAwarePolicy()
    router = Router(settings, live, MemoryLog(), policies={"shadow": shadow})
    with pytest.raises(FailedPrecondition):
        router.rollback()
    router.promote(shadow, {"verdict": "promoted"})
    assert router.policy is shadow
    decision = router.route(RouteQuery(prompt="hello", tenant="acme"))
    router.feedback(FeedbackReport(decision.decision_id, quality=1.0, tenant="acme"))
    assert shadow.updates == 1
    restored, rolled_back, _ = router.rollback()
    assert router.policy is live
    assert router.policies["default"] is live
    assert (restored, rolled_back) == (live.version, shadow.version)


def test_a_candidate_the_log_cannot_answer_for_is_refused(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log whose policy never tried beta (a fixed policy without a floor) cannot evaluate
    fixed:beta, whatever DR's reward model says: refused with replay's reliability reason."""
    settings = settings_from_mapping(
        {**tomllib.loads(config.read_text()), "policy": {"min_probability": 0.0}}
    )
    path = tmp_path / "fixed.duckdb"
    event_log = DuckDBLog(path, sync_feedback=False)
    _serve(Router(settings, FixedPolicy("alpha"), event_log))
    event_log.close()
    code = main(["promote", "--log", str(path), "--config", str(config), "--candidate",
                 "fixed:beta"])  # fmt: skip
    assert code == 1
    out = capsys.readouterr().out
    assert "the log cannot answer for the candidate: effective sample size" in out
