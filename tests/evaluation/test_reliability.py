"""Reliability verdicts (issue 13 item 2): a candidate the log cannot answer for is said to be
unreliable, with the reason, in the replay table and JSON, and tune never recommends it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from replay_world import OBJECTIVE, WrittenLog, settings_for_tests

from banditroute.evaluation import LoggedData, diagnostics
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.estimators import Diagnostics
from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import resolve_objective
from banditroute.evaluation.reliability import MIN_ESS, verdict
from banditroute.evaluation.replay import format_table, replay
from banditroute.evaluation.tune import TunePoint, recommend
from banditroute.store.reader import open_log


def test_verdict_needs_a_large_enough_sample_and_overlap() -> None:
    """Reliable takes an effective sample size of at least MIN_ESS and at most 5% of the
    candidate's traffic where the logger's probability was below 0.005; each failure is
    named in the reason with its numbers."""
    good = verdict(Diagnostics(ess=500.0, max_weight=3.0, unsupported_share=0.1, thin_mass=0.0))
    assert good.reliable
    assert "500" in good.reason
    tiny = verdict(Diagnostics(ess=2.0, max_weight=90.0, unsupported_share=0.9, thin_mass=0.0))
    assert not tiny.reliable
    assert f"effective sample size 2.0 < {MIN_ESS:g}" in tiny.reason
    thin = verdict(
        Diagnostics(
            ess=800.0, max_weight=5.0, unsupported_share=0.2, uncovered_mass=0.2, thin_mass=0.3
        )
    )
    assert not thin.reliable
    assert "30.0% of its traffic goes to models the logger gave probability < 0.005" in thin.reason
    assert "20.0% never tried" in thin.reason
    assert thin.as_dict() == {"reliable": False, "reason": thin.reason}


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
    the JSON; the logging policy itself is reliable on its own log."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path))
    specs = [parse_candidate("logged"), parse_candidate("fixed:coder")]
    result = replay(log, specs, resolve_objective(OBJECTIVE, settings), settings, n_boot=50)
    logged, fixed = result.candidates
    assert logged.verdict.reliable
    assert logged.verdict == verdict(logged.diagnostics)
    text = format_table(result)
    assert f"reliable: {logged.verdict.reason}" in text
    if not fixed.verdict.reliable:
        assert f"UNRELIABLE (the log cannot answer): {fixed.verdict.reason}" in text
    path = tmp_path / "replay.json"
    result.write_json(path)
    rows = json.loads(path.read_text())["candidates"]
    assert [row["reliable"] for row in rows] == [logged.verdict.reliable, fixed.verdict.reliable]
    assert rows[1]["reliability_reason"] == fixed.verdict.reason
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
