"""Tests of ``banditroute export --format dsjson``: VW's own parsers read the export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import vowpal_wabbit_next as vw
from replay_world import (
    CONFIG,
    OBJECTIVE,
    WrittenLog,
    make_world,
    settings_for_tests,
    write_log,
)

from banditroute import cli
from banditroute.evaluation.logdata import ReplayLog, counts, load_log
from banditroute.evaluation.objective_rewards import log_rewards, resolve_objective
from banditroute.store.reader import open_log


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[WrittenLog, Path, Path]:
    """A log (some decisions without an outcome, some with ``large`` excluded) exported."""
    folder = tmp_path_factory.mktemp("dsjson")
    written = write_log(
        folder / "log.duckdb", make_world(), 200, seed=6, no_feedback_every=9, exclude_every=5
    )
    config = folder / "test.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = folder / "export.dsjson"
    code = cli.main(
        [
            "export",
            "--log",
            str(written.path),
            "--config",
            str(config),
            "--format",
            "dsjson",
            "--out",
            str(out),
            "--objective",
            OBJECTIVE,
        ]
    )
    assert code == 0
    return written, config, out


def _loaded(written: WrittenLog) -> ReplayLog:
    return load_log(open_log(written.path), with_features=True)


def test_export_parses_with_dsjson_format_parser(exported: tuple[WrittenLog, Path, Path]) -> None:
    """Every exported line parses with vowpal-wabbit-next's DSJsonFormatParser into a shared
    example plus one per eligible model, with the CB label (1-based action, cost = -reward,
    probability) on the chosen action's example."""
    written, _, out = exported
    log = _loaded(written)
    with_outcome = np.flatnonzero(log.has_outcome)
    lines = out.read_text().splitlines()
    assert len(lines) == counts(log).with_outcome == with_outcome.shape[0]
    rewards = log_rewards(log, resolve_objective(OBJECTIVE, settings_for_tests()))
    workspace = vw.Workspace(["--cb_explore_adf", "--quiet"])
    parser = vw.DSJsonFormatParser(workspace)
    for line, row in zip(lines, with_outcome, strict=True):
        event = json.loads(line)
        examples = parser.parse_json(line)
        cols = log.eligible_columns(int(row))
        assert len(examples) == 1 + cols.shape[0]
        labels = [e.get_label() for e in examples]
        assert labels[0].shared
        chosen = int(np.flatnonzero(cols == log.actions[row])[0])
        labelled = [i for i, label in enumerate(labels[1:]) if label.label is not None]
        assert labelled == [chosen] == [event["_labelIndex"]]
        action, cost, probability = labels[1 + chosen].label
        assert action == chosen + 1 == event["_label_Action"] == event["a"][0]
        assert cost == pytest.approx(-rewards[row], abs=1e-6)
        assert probability == pytest.approx(log.propensities[row], abs=1e-6)
        assert event["p"][0] == pytest.approx(log.propensities[row])
        assert sorted(event["a"]) == list(range(1, cols.shape[0] + 1))
        assert sum(event["p"]) == pytest.approx(1.0)
        assert event["EventId"] == log.decision_id(int(row))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", event["Timestamp"])
        workspace.learn_one(examples)


def test_vw_command_line_reads_the_export(exported: tuple[WrittenLog, Path, Path]) -> None:
    """``vw --dsjson --cb_explore_adf -d FILE`` (VW's own command-line driver) trains on every
    exported decision."""
    _, _, out = exported
    driver_output, _ = vw.run_cli_driver(
        ["--dsjson", "--cb_explore_adf", "-q", "sa", "-d", str(out)], onethread=True
    )
    lines = out.read_text().splitlines()
    assert f"number of examples = {len(lines)}" in driver_output


def test_missing_outcomes_export_with_the_default_reward(
    exported: tuple[WrittenLog, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--missing default`` exports every decision; the ones without an outcome carry the
    configured default reward as their cost."""
    written, config, _ = exported
    config_text = config.read_text() + "[reward]\ndefault_reward = -0.5\n"
    with_default = tmp_path / "default.toml"
    with_default.write_text(config_text, encoding="utf-8")
    code = cli.main(
        [
            "export",
            "--log",
            str(written.path),
            "--config",
            str(with_default),
            "--out",
            "-",
            "--missing",
            "default",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    log = _loaded(written)
    assert len(events) == log.n
    missing = {log.decision_id(i) for i in np.flatnonzero(~log.has_outcome)}
    costs = {e["EventId"]: e["_label_cost"] for e in events}
    assert missing
    assert all(costs[m] == 0.5 for m in missing)
    assert f"wrote {log.n} decisions" in captured.err


def test_export_errors_name_the_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing --log and an unwritable --out are reported naming the argument."""
    assert cli.main(["export", "--log", str(tmp_path / "none.duckdb")]) == 2
    assert "banditroute export: error: --log: no such log" in capsys.readouterr().err
    out = str(tmp_path / "no" / "such" / "dir.dsjson")
    assert cli.main(["export", "--log", str(tmp_path / "none.duckdb"), "--out", out]) == 2
    assert "banditroute export: error: --out: no such directory" in capsys.readouterr().err


def test_export_to_a_directory_names_out(
    exported: tuple[WrittenLog, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a directory is an error naming --out, not an IsADirectoryError traceback."""
    written, config, _ = exported
    argv = ["export", "--log", str(written.path), "--config", str(config), "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "banditroute export: error: --out: cannot write" in capsys.readouterr().err
