"""End-to-end tests of ``banditroute replay``: Router -> DuckDB log -> replay -> estimates.

Ground truth comes from the synthetic world's full outcome table: the true value of a fixed
or uniform policy is the mean over the prompts of its expected reward.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from replay_world import (
    CONFIG,
    MODELS,
    OBJECTIVE,
    T0,
    TaskPolicy,
    World,
    WrittenLog,
    cli_error,
    make_world,
    settings_for_tests,
    write_log,
)

from banditroute import cli
from banditroute.catalog import ModelSpec
from banditroute.evaluation.candidates import parse_candidate
from banditroute.evaluation.logdata import load_log
from banditroute.evaluation.objective_rewards import resolve_objective
from banditroute.evaluation.replay import format_table, replay
from banditroute.features import PromptFeatures
from banditroute.policies.base import Probabilities
from banditroute.store.reader import open_log

WINDOWS = 60
PER_WINDOW = 250
COVERAGE_CANDIDATES = ("fixed:large", "fixed:medium", "uniform")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config file with the test catalogue, for the CLI."""
    path = tmp_path_factory.mktemp("config") / "test.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def true_value(world: World, spec: str) -> float:
    """The candidate's true mean reward under the test objective, from the full table."""
    k = len(MODELS)
    if spec == "uniform":
        target = np.full((len(world.prompts), k), 1.0 / k)
    else:
        target = np.zeros((len(world.prompts), k))
        target[:, MODELS.index(spec.removeprefix("fixed:"))] = 1.0
    return world.true_value(target, cost_weight=50.0)


@pytest.fixture(scope="module")
def long_log(tmp_path_factory: pytest.TempPathFactory) -> WrittenLog:
    """WINDOWS x PER_WINDOW decisions, one per second, logged by the exploring TaskPolicy."""
    path = tmp_path_factory.mktemp("coverage") / "log.duckdb"
    return write_log(path, make_world(), WINDOWS * PER_WINDOW, seed=11)


def test_intervals_cover_the_true_value_end_to_end(long_log: WrittenLog) -> None:
    """Over 60 disjoint windows of 250 routed decisions, the true value of three candidates
    lies inside the 95% bootstrap interval (1,000 resamples) of IPS, SNIPS and DR at least 90%
    of the time, and
    DR's mean absolute error is below IPS's.

    (Candidates the logging policy rarely explores, with weights up to 10, have skewed IPS
    terms that percentile intervals under-cover at 250 decisions; the 20-seed benchmark
    ``benchmarks/ope_accuracy.py`` reports coverage for those too.)"""
    settings = settings_for_tests()
    objective = resolve_objective(OBJECTIVE, settings)
    specs = [parse_candidate(text) for text in COVERAGE_CANDIDATES]
    source = open_log(long_log.path)
    hits: dict[str, list[bool]] = {"ips": [], "snips": [], "dr": []}
    errors: dict[str, list[float]] = {"ips": [], "dr": []}
    for window in range(WINDOWS):
        since = datetime.fromtimestamp(T0 + window * PER_WINDOW, tz=UTC)
        until = datetime.fromtimestamp(T0 + (window + 1) * PER_WINDOW, tz=UTC)
        log = load_log(source, since=since, until=until)
        assert log.n == PER_WINDOW
        result = replay(log, specs, objective, settings, seed=window, n_boot=1000)
        for candidate in result.candidates:
            truth = true_value(long_log.world, candidate.name)
            for name, flags in hits.items():
                flags.append(candidate.estimates[name].contains(truth))
            for name, values in errors.items():
                values.append(abs(candidate.estimates[name].estimate - truth))
    coverage = {name: float(np.mean(flags)) for name, flags in hits.items()}
    assert all(value >= 0.90 for value in coverage.values()), coverage
    assert np.mean(errors["dr"]) < np.mean(errors["ips"])


def test_json_report_and_plot(shared_log: WrittenLog, config: Path, tmp_path: Path) -> None:
    """``--json`` writes n_decisions and, per candidate, every estimator's value and interval
    with the ESS and largest weight; ``--plot`` writes a PNG; a trained candidate puts every
    candidate on the held-out half and the output says so."""
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = cli.main(
        [
            "replay",
            "--log",
            str(shared_log.path),
            "--config",
            str(config),
            "--candidate",
            "logged",
            "--candidate",
            "fixed:large",
            "--candidate",
            "linucb:alpha=0.2",
            "--objective",
            OBJECTIVE,
            "--n-boot",
            "50",
            "--json",
            str(out),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n_decisions"] == report["held_out"]["n_eval"]
    assert report["held_out"]["n_train"] + report["n_decisions"] == report["n_with_outcome"]
    assert [c["name"] for c in report["candidates"]] == [
        "logged",
        "fixed:large",
        "linucb:alpha=0.2",
    ]
    for candidate in report["candidates"]:
        assert set(candidate["estimates"]) == {"ips", "snips", "dm", "dr", "sndr", "switch-dr"}
        for interval in candidate["estimates"].values():
            assert interval["lower"] <= interval["value"] <= interval["upper"]
        assert 0 < candidate["ess"] <= report["n_decisions"]
        assert candidate["max_weight"] >= 1.0 or candidate["name"] != "fixed:large"
    logged = report["candidates"][0]
    assert logged["max_weight"] == pytest.approx(1.0)
    assert logged["estimates"]["ips"]["value"] == pytest.approx(
        logged["estimates"]["snips"]["value"]
    )
    assert png.read_bytes().startswith(b"\x89PNG")


class NeverMediumPolicy(TaskPolicy):
    """The test logging policy, except that it never picks ``medium``."""

    def _distribution(self, context: PromptFeatures, arms: Sequence[ModelSpec]) -> Probabilities:
        probs = super()._distribution(context, arms)
        probs[[arm.id == "medium" for arm in arms]] = 0.0
        return probs / probs.sum()


def test_plot_with_a_candidate_missing_an_estimator(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate the log never supports (SNIPS and SNDR undefined, left out with a note) is
    still drawn with the others' estimators by ``--plot`` (a KeyError traceback before)."""
    written = write_log(
        tmp_path / "log.duckdb", make_world(), 60, seed=4, policy=NeverMediumPolicy()
    )
    png = tmp_path / "r.png"
    argv = ["replay", "--log", str(written.path), "--config", str(config), "--n-boot", "20"]
    argv += ["--candidate", "uniform", "--candidate", "fixed:medium", "--plot", str(png)]
    assert cli.main(argv) == 0
    assert "snips: not estimated" in capsys.readouterr().out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_table_states_the_data_used(shared_log: WrittenLog) -> None:
    """The printed table says how many decisions lacked an outcome and were excluded, and that
    all candidates were evaluated on the held-out half when one is trained."""
    settings = settings_for_tests()
    log = load_log(open_log(shared_log.path), with_features=True)
    result = replay(
        log,
        [parse_candidate("uniform"), parse_candidate("linucb")],
        resolve_objective(OBJECTIVE, settings),
        settings,
        n_boot=50,
    )
    text = format_table(result)
    assert "20 without (8 only with feedback for another model), excluded" in text
    assert "ALL candidates are evaluated on the last 290" in text
    assert result.n_decisions == 290


def test_missing_outcomes_can_count_with_the_default_reward(shared_log: WrittenLog) -> None:
    """``missing="default"`` keeps decisions without an outcome, scored with the configured
    default reward, so the logged policy's on-policy mean moves towards it."""
    settings = settings_for_tests(default_reward=-1.0)
    log = load_log(open_log(shared_log.path))
    objective = resolve_objective(OBJECTIVE, settings)
    spec = [parse_candidate("logged")]
    excluded = replay(log, spec, objective, settings, n_boot=50)
    counted = replay(log, spec, objective, settings, missing="default", n_boot=50)
    assert (excluded.n_decisions, counted.n_decisions) == (580, 600)
    ips_excluded = excluded.candidates[0].estimates["ips"].estimate
    ips_counted = counted.candidates[0].estimates["ips"].estimate
    assert ips_counted == pytest.approx((ips_excluded * 580 - 20) / 600)


def test_reads_the_export_while_a_server_holds_the_log(tmp_path: Path, config: Path) -> None:
    """While another process holds the DuckDB file open, replay reads the writer's Parquet
    export instead (the single-writer lock)."""
    path = tmp_path / "live.duckdb"
    write_log(path, make_world(), 100, seed=9, export_dir=tmp_path / "live.duckdb.export")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(path)!r})
            print("ready", flush=True)
            sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        out = tmp_path / "live.json"
        code = cli.main(
            [
                "replay",
                "--log",
                str(path),
                "--config",
                str(config),
                "--n-boot",
                "20",
                "--json",
                str(out),
            ]
        )
        assert code == 0
        report = json.loads(out.read_text())
        assert "Parquet export" in report["log"]
        assert report["n_logged"] == 100
    finally:
        holder.communicate("")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--candidate", "bogus"], "--candidate: 'bogus' is not a candidate spec"),
        (["--candidate", "fixed:gpt-9"], "--candidate: 'fixed:gpt-9': unknown model 'gpt-9'"),
        (["--objective", "quality=high"], "--objective: quality='high' is not a number"),
        (["--objective", "cheapest"], "--objective: unknown profile 'cheapest'"),
        (["--since", "2023-11-15", "--until", "2023-11-14"], "--since: .* is not before --until"),
        (["--since", "soon"], "--since: 'soon' is not an ISO 8601 time"),
        (["--since", "2031-01-01"], "--log: no usable decisions in the --since/--until window"),
        (["--estimators", "ips,magic"], "--estimators: unknown magic"),
        (["--level", "1.5"], "--level: must be between 0 and 1"),
        (["--word-buckets", "100000000"], "--word-buckets: must be in 0..4096"),
        (["--switch-tau", "soon"], "--switch-tau: expected a number or auto, got 'soon'"),
        (["--switch-tau", "-1"], "--switch-tau: must be >= 0"),
        (["--json", "/no/such/dir/out.json"], "--json: no such directory"),
    ],
)
def test_cli_errors_name_the_argument(
    shared_log: WrittenLog,
    config: Path,
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Bad input exits with status 2 and ``banditroute replay: error: ARG: ...``."""
    err = cli_error(
        ["replay", "--log", str(shared_log.path), "--config", str(config), *argv], capsys
    )
    assert re.search(message, err), err


def test_missing_log_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --log path that does not exist is reported naming --log."""
    code = cli.main(["replay", "--log", str(tmp_path / "nope.duckdb")])
    assert code == 2
    assert "banditroute replay: error: --log: no such log" in capsys.readouterr().err
