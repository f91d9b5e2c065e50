"""Tests of ``banditroute tune``: the weight sweep, its Pareto frontier and recommendation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from replay_world import CONFIG, MODELS, WrittenLog, cli_error, settings_for_tests

from banditroute import cli
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import resolve_objective
from banditroute.evaluation.tune import (
    TunePoint,
    TuneResult,
    format_table,
    pareto_frontier,
    recommend,
    tune,
)
from banditroute.store.reader import open_log

LOOSE = 0.5
"""A tolerance the small shared log can meet: the sweep's mechanics are under test here."""


@pytest.fixture(scope="module")
def swept(shared_log: WrittenLog) -> TuneResult:
    """A small sweep of cost weights with a LinUCB learner on the shared log, judged at a
    loose tolerance (290 held-out decisions cannot pin a quality down to 2%)."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path), with_features=True)
    return tune(
        log,
        settings,
        resolve_objective("quality=1,cost=0,latency=0", settings),
        parse_candidate("vw:--cb_explore_adf --epsilon 0.05 -q sa --power_t 0"),
        cost_weights=(0.0, 100.0, 2000.0),
        n_boot=50,
        tolerance=LOOSE,
    )


def _point(label: str, quality: float, cost: float) -> TunePoint:
    return TunePoint(
        label,
        "sweep",
        {},
        Interval(quality, quality, quality, 0.95),
        Interval(cost, cost, cost, 0.95),
        Interval(0, 0, 0, 0.95),
        ess=1.0,
        max_weight=1.0,
    )


def test_pareto_frontier_keeps_only_undominated_points() -> None:
    """A point is on the frontier unless another is at most as costly and at least as good,
    and strictly better on one of the two."""
    cost = [1.0, 2.0, 2.0, 3.0, 0.5]
    quality = [0.5, 0.7, 0.6, 0.7, 0.5]
    assert pareto_frontier(cost, quality) == [False, True, False, False, True]


def test_recommendation_meets_the_stated_target() -> None:
    """The quality-share target picks the cheapest point within the share of the best; the
    budget target picks the best quality within the budget, or none if nothing fits."""
    points = [_point("a", 0.90, 4.0), _point("b", 0.87, 2.0), _point("c", 0.80, 1.0)]
    index, target, _ = recommend(points, quality_share=0.95, max_cost=None)
    assert (index, "95%" in target) == (1, True)
    assert recommend(points, quality_share=0.85, max_cost=None)[0] == 2
    assert recommend(points, quality_share=None, max_cost=2.5)[0] == 1
    none, _, reason = recommend(points, quality_share=None, max_cost=0.5)
    assert none is None
    assert "no setting" in reason


def test_sweep_trades_quality_for_cost(swept: TuneResult) -> None:
    """A higher cost weight trains a cheaper policy (estimated on the held-out half), the
    frontier flags are consistent (drawn through the reliable settings), the fixed models are
    shown as references, and the recommended setting reaches 95% of the best reliable
    estimated quality."""
    sweep = [p for p in swept.points if p.kind == "sweep"]
    refs = [p.label for p in swept.points if p.kind == "reference"]
    assert [p.label for p in sweep] == ["cost=0", "cost=100", "cost=2000"]
    assert refs == ["logged", *(f"fixed:{m}" for m in MODELS)]
    assert sweep[0].cost_usd.estimate > sweep[-1].cost_usd.estimate
    assert sweep[0].quality.estimate > sweep[-1].quality.estimate
    reliable = [p for p in sweep if p.reliable]
    assert reliable
    flags = pareto_frontier(
        [p.cost_usd.estimate for p in reliable], [p.quality.estimate for p in reliable]
    )
    assert [p.frontier for p in reliable] == flags
    assert swept.recommended is not None
    best = max(p.quality.estimate for p in reliable)
    assert swept.points[swept.recommended].quality.estimate >= 0.95 * best
    assert swept.n_train + swept.n_eval == 580


def test_cli_writes_table_json_and_plot(
    shared_log: WrittenLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``banditroute tune`` prints the sweep with the recommendation and writes JSON and PNG."""
    config = tmp_path / "test.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out, png = tmp_path / "tune.json", tmp_path / "tune.png"
    code = cli.main(
        [
            "tune",
            "--log",
            str(shared_log.path),
            "--config",
            str(config),
            "--policy",
            "linucb:alpha=0.2",
            "--cost-weights",
            "0,300",
            "--max-cost",
            "0.002",
            "--objective",
            "quality=1,cost=0,latency=0",
            "--n-boot",
            "30",
            "--json",
            str(out),
            "--plot",
            str(png),
            "--no-references",
            "--tolerance",
            str(LOOSE),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "recommended:" in text
    assert "at most $0.002" in text
    report = json.loads(out.read_text())
    assert [p["label"] for p in report["points"]] == ["cost=0", "cost=300"]
    assert report["estimator"] == "dr"
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policy", "uniform"], "--policy: 'uniform' is not a trainable policy"),
        (["--policy", "vw:--bogus_flag"], "--policy: .*Vowpal Wabbit rejected"),
        (["--cost-weights", "0,cheap"], "--cost-weights: 'cheap' is not a number"),
        (["--cost-weights", "-5"], "--cost-weights: weights must be >= 0"),
        (["--target-quality-share", "1.5"], "--target-quality-share: must be in"),
        (["--objective", "nope"], "--objective: unknown profile 'nope'"),
    ],
)
def test_cli_errors_name_the_argument(
    shared_log: WrittenLog, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad tune arguments exit 2 naming the argument."""
    err = cli_error(["tune", "--log", str(shared_log.path), *argv], capsys)
    assert re.search(message, err), err


def test_frontier_and_recommendation_use_reliable_settings_only(swept: TuneResult) -> None:
    """No setting the log cannot answer for is on the frontier or recommended; each point says
    whether it is reliable and why, in the table and the JSON."""
    for index, point in enumerate(swept.points):
        assert point.reason
        if not point.reliable:
            assert not point.frontier
            assert index != swept.recommended
            assert f"  {point.label}: {point.reason}" in format_table(swept)
        assert point.as_dict()["reliable"] is point.reliable
