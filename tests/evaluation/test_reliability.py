"""Reliability verdicts (issue 13 item 2): a candidate the log cannot answer for is said to be
unreliable, with the reason, in the replay table and JSON, and tune never recommends it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from replay_world import CONFIG, OBJECTIVE, WrittenLog, cli_error, settings_for_tests

from banditroute import cli
from banditroute.evaluation import LoggedData, diagnostics
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.estimators import Diagnostics
from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import resolve_objective
from banditroute.evaluation.reliability import MIN_ESS, check_tolerance, verdict
from banditroute.evaluation.replay import format_table, replay
from banditroute.evaluation.tune import TunePoint, recommend, tune
from banditroute.evaluation.tune import format_table as format_tune
from banditroute.store.reader import open_log

NARROW = Interval(0.60, 0.594, 0.606, 0.95)
"""A DR interval reaching 1% of its estimate either way."""


def test_verdict_needs_a_large_enough_sample_and_overlap() -> None:
    """Reliable takes an effective sample size of at least MIN_ESS and at most 5% of the
    candidate's traffic where the logger's probability was below 0.005; each failure is
    named in the reason with its numbers (a precise DR interval does not save it)."""
    good = verdict(
        Diagnostics(ess=500.0, max_weight=3.0, unsupported_share=0.1, thin_mass=0.0), NARROW
    )
    assert good.reliable
    assert "500" in good.reason
    tiny = verdict(
        Diagnostics(ess=2.0, max_weight=90.0, unsupported_share=0.9, thin_mass=0.0), NARROW
    )
    assert not tiny.reliable
    assert f"effective sample size 2.0 < {MIN_ESS:g}" in tiny.reason
    thin = verdict(
        Diagnostics(
            ess=800.0, max_weight=5.0, unsupported_share=0.2, uncovered_mass=0.2, thin_mass=0.3
        ),
        NARROW,
    )
    assert not thin.reliable
    assert "30.0% of its traffic goes to models the logger gave probability < 0.005" in thin.reason
    assert "20.0% never tried" in thin.reason
    assert thin.as_dict() == {
        "reliable": False,
        "reason": thin.reason,
        "relative_half_width": pytest.approx(0.01),
        "tolerance": 0.02,
    }


def test_verdict_needs_a_dr_interval_within_the_tolerance() -> None:
    """With enough ESS and overlap, a candidate is reliable only if its DR interval reaches at
    most ``tolerance`` times its estimate on either side (the larger side counts): 1% passes
    at the default 2%, 10% fails with the half-width and its share of the estimate in the
    reason, and passes at a tolerance of 0.11; an interval of any width around 0 and a missing
    DR interval are unreliable."""
    fine = Diagnostics(ess=1500.0, max_weight=3.0, unsupported_share=0.1, thin_mass=0.0)
    narrow = verdict(fine, NARROW)
    assert narrow.reliable
    assert narrow.half_width == pytest.approx(0.01)
    assert "DR interval within 1.0% of the estimate (tolerance 2.0%)" in narrow.reason
    lopsided = Interval(0.60, 0.59, 0.66, 0.95)  # 1.7% below, 10% above
    wide = verdict(fine, lopsided)
    assert not wide.reliable
    assert wide.half_width == pytest.approx(0.1)
    assert "DR interval half-width 0.06 is 10.0% of the estimate 0.6 > tolerance 2.0%" in (
        wide.reason
    )
    assert "DR" in wide.short
    assert verdict(fine, lopsided, tolerance=0.11).reliable
    around_zero = verdict(fine, Interval(0.0, -0.01, 0.01, 0.95))
    assert not around_zero.reliable
    assert "unbounded" in around_zero.reason
    assert around_zero.as_dict()["relative_half_width"] is None  # JSON has no infinity
    missing = verdict(fine, None)
    assert not missing.reliable
    assert "no DR interval" in missing.reason


@pytest.mark.parametrize("bad", [0, 0.0, -0.02, 1.5, math.nan, math.inf, True, "0.02"])
def test_tolerance_outside_zero_to_one_is_an_error_naming_it(bad: object) -> None:
    """The tolerance is a share of the estimate in (0, 1]: anything else is a ValueError
    naming the argument, from the check and from the verdict; 1 and 0.02 are accepted."""
    with pytest.raises(ValueError, match=r"^tolerance: must be a share"):
        check_tolerance(bad)
    with pytest.raises(ValueError, match=r"^--tolerance: "):
        check_tolerance(bad, "--tolerance")
    with pytest.raises(ValueError, match=r"^tolerance: "):
        verdict(Diagnostics(ess=500.0, max_weight=1.0, unsupported_share=0.0), NARROW,
                tolerance=bad)  # type: ignore[arg-type]  # fmt: skip
    assert check_tolerance(1) == 1.0
    assert check_tolerance(0.02) == 0.02


def test_diagnostics_measure_traffic_to_rarely_tried_models() -> None:
    """``thin_mass`` is the candidate's mean probability on models the logger gave less than
    0.005 (never tried included); ``uncovered_mass`` counts the never-tried ones only."""
    n = 100
    logging = np.tile([0.996, 0.003, 0.001, 0.0], (n, 1))
    data = LoggedData(
        actions=np.zeros(n, dtype=np.int64),
        rewards=np.ones(n),
        propensities=np.full(n, 0.996),
        mask=np.ones((n, 4), dtype=bool),
        logging_probs=logging,
    )
    target = np.tile([0.4, 0.2, 0.1, 0.3], (n, 1))
    found = diagnostics(data, target)
    assert np.isclose(found.thin_mass or 0.0, 0.6)
    assert np.isclose(found.uncovered_mass or 0.0, 0.3)


def test_replay_rows_carry_the_verdict(shared_log: WrittenLog, tmp_path: Path) -> None:
    """Every candidate row of replay says whether it is reliable and why, in the table and in
    the JSON (with the DR interval's relative half-width and the tolerance); the logging
    policy itself is reliable on its own log at a tolerance its 580 decisions can meet."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path))
    specs = [parse_candidate("logged"), parse_candidate("fixed:coder")]
    objective = resolve_objective(OBJECTIVE, settings)
    result = replay(log, specs, objective, settings, n_boot=50, tolerance=0.5)
    logged, fixed = result.candidates
    assert logged.verdict.reliable
    assert logged.verdict == verdict(logged.diagnostics, logged.estimates["dr"], tolerance=0.5)
    text = format_table(result)
    assert f"reliable: {logged.verdict.reason}" in text
    assert "DR interval within 50.0% of its estimate" in text  # the rule, with the tolerance
    if not fixed.verdict.reliable:
        assert f"UNRELIABLE (the log cannot answer): {fixed.verdict.reason}" in text
    path = tmp_path / "replay.json"
    result.write_json(path)
    document = json.loads(path.read_text())
    rows = document["candidates"]
    assert document["reliability"]["tolerance"] == 0.5
    assert [row["reliable"] for row in rows] == [logged.verdict.reliable, fixed.verdict.reliable]
    assert rows[1]["reliability_reason"] == fixed.verdict.reason
    assert rows[0]["tolerance"] == 0.5
    assert rows[0]["relative_half_width"] == pytest.approx(logged.verdict.half_width)
    plot_path = tmp_path / "replay.png"
    from banditroute.evaluation.replay import plot

    plot(result, plot_path)
    assert plot_path.stat().st_size > 0


def _point(label: str, quality: float, cost: float, *, reliable: bool = True) -> TunePoint:
    interval = Interval(quality, quality, quality, 0.95)
    return TunePoint(
        label,
        "sweep",
        {},
        interval,
        Interval(cost, cost, cost, 0.95),
        Interval(0, 0, 0, 0.95),
        ess=500.0 if reliable else 2.0,
        max_weight=1.0,
        reliable=reliable,
        reason="fine" if reliable else "effective sample size 2.0 < 50",
    )


def test_tune_never_recommends_an_unreliable_setting() -> None:
    """A setting estimated best and cheapest on an effective sample size of 2 is left out: the
    recommendation comes from the reliable settings and says how many were left out; with
    no reliable setting there is no recommendation, and the reason says the log cannot
    answer."""
    points = [
        _point("a", 0.90, 4.0),
        _point("b", 0.87, 2.0),
        _point("lucky", 0.99, 0.5, reliable=False),
    ]
    index, target, reason = recommend(points, quality_share=0.95, max_cost=None)
    assert index == 1
    assert "(0.9000)" in target  # the best reliable quality, not the unreliable 0.99
    assert "1 unreliable settings left out" in reason
    assert recommend(points, quality_share=None, max_cost=1.0)[0] is None
    none, _, why = recommend(
        [_point("x", 0.9, 1.0, reliable=False)], quality_share=None, max_cost=None
    )
    assert none is None
    assert "cannot answer" in why


def test_a_stricter_tolerance_turns_a_replay_verdict_unreliable(shared_log: WrittenLog) -> None:
    """The same candidate on the same log is reliable at a tolerance its DR interval meets and
    unreliable, with the interval's half-width and its share of the estimate in the reason,
    at one it does not."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path))
    objective = resolve_objective(OBJECTIVE, settings)
    loose = replay(log, [parse_candidate("logged")], objective, settings, n_boot=50,
                   tolerance=0.5).candidates[0]  # fmt: skip
    assert loose.verdict.reliable
    half = loose.verdict.half_width
    assert half is not None
    assert 0 < half < 0.5
    strict = replay(log, [parse_candidate("logged")], objective, settings, n_boot=50,
                    tolerance=half / 2).candidates[0]  # fmt: skip
    assert not strict.verdict.reliable
    assert f"is {half:.1%} of the estimate" in strict.verdict.reason
    with pytest.raises(ValueError, match=r"^tolerance: "):
        replay(log, [parse_candidate("logged")], objective, settings, n_boot=50, tolerance=0)


@pytest.mark.parametrize("command", ["replay", "tune"])
@pytest.mark.parametrize("value", ["0", "-0.1", "1.01", "nan", "inf"])
def test_cli_tolerance_outside_zero_to_one_is_an_error_naming_it(
    shared_log: WrittenLog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    value: str,
) -> None:
    """``replay`` and ``tune`` reject a ``--tolerance`` outside (0, 1] before reading the log:
    exit 2 with one line naming the argument; a non-number is argparse's error naming it."""
    config = tmp_path / "test.toml"
    config.write_text(CONFIG, encoding="utf-8")
    argv = [command, "--log", str(shared_log.path), "--config", str(config)]
    err = cli_error([*argv, "--tolerance", value], capsys)
    assert "error: --tolerance: must be a share of the estimate in (0, 1]" in err
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, "--tolerance", "two"])
    assert stopped.value.code == 2
    assert "argument --tolerance: invalid float value: 'two'" in capsys.readouterr().err


def test_tune_judges_each_setting_by_its_quality_interval(shared_log: WrittenLog) -> None:
    """tune rates a setting reliable only when its quality interval is within the tolerance:
    at a tolerance no setting's interval meets, none is reliable, each reason names the DR
    interval's width, and nothing is recommended."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path), with_features=True)
    result = tune(
        log,
        settings,
        resolve_objective("quality=1,cost=0,latency=0", settings),
        parse_candidate("linucb:alpha=0.2"),
        cost_weights=(0.0, 300.0),
        n_boot=30,
        references=False,
        tolerance=0.001,
    )
    assert result.points
    assert not any(p.reliable for p in result.points)
    assert all("DR interval half-width" in p.reason for p in result.points)
    assert result.recommended is None
    assert result.as_dict()["tolerance"] == 0.001
    assert "quality interval within 0.1% of its estimate (--tolerance)" in format_tune(result)
