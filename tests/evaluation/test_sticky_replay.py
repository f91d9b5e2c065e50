"""Replay and sticky session decisions (issue 15): a decision a session forced is logged with
probability 1 and left out of off-policy evaluation, never weighed as a policy's draw."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest
from replay_world import CONFIG, World, write_log

from banditroute import cli
from banditroute.evaluation.logdata import counts, load_log
from banditroute.store.reader import open_log

STICKY_SQL = """SELECT decision_id, probability, probabilities FROM decisions
WHERE json_extract_string(constraints, '$.session_sticky') = 'true'"""


def test_load_log_leaves_sticky_decisions_out(tmp_path: Path, world: World) -> None:
    """The sticky decisions of a log (probability 1, one-hot) are not in the replay data and
    are counted apart; the decisions that started a session are, with their drawn
    probability (below 1: the logging policy explores); so are those without a session."""
    written = write_log(tmp_path / "log.duckdb", world, 300, seed=3, sessions=5)
    with duckdb.connect(str(written.path), read_only=True) as con:
        sticky = con.execute(STICKY_SQL).fetchall()
        starts = con.execute(
            "SELECT count(*) FROM decisions WHERE "
            "json_extract_string(constraints, '$.session_sticky') = 'false'"
        ).fetchone()
    assert starts is not None
    assert starts[0] >= 5
    assert len(sticky) > 100
    assert all(p == 1.0 and sorted(v)[-1] == 1.0 and sum(v) == 1.0 for _, p, v in sticky)
    source = open_log(written.path)
    try:
        log = load_log(source)
    finally:
        source.connection.close()
    assert log.n_sticky == len(sticky)
    assert log.n == 300 - len(sticky)
    c = counts(log)
    assert (c.logged, c.sticky, c.invalid) == (300, len(sticky), 0)
    kept = set(log.decision_ids.to_pylist())
    assert kept.isdisjoint(d for d, _, _ in sticky)
    assert np.all(log.propensities < 1.0)  # every kept row is a draw of the exploring policy


def test_replay_reports_the_sticky_decisions_it_left_out(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay`` says how many sticky decisions it left out, in its table and its JSON."""
    written = write_log(tmp_path / "log.duckdb", world, 200, seed=4, sessions=3)
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    out = tmp_path / "r.json"
    argv = ["replay", "--log", str(written.path), "--config", str(config), "--n-boot", "20",
            "--candidate", "uniform", "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["n_sticky"] > 0
    assert report["n_logged"] == 200
    assert f"{report['n_sticky']} sticky session decisions left out" in capsys.readouterr().out
