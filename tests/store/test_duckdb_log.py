"""DuckDBLog: rows land in the DuckDB file with the right types, in batches, durably."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from store_helpers import count_rows

from banditroute.store.duckdb_log import DuckDBLog


def _close_within(log: DuckDBLog, seconds: float = 10.0) -> None:
    """Close the log, failing (rather than hanging the suite) if close() blocks."""
    thread = threading.Thread(target=log.close, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "DuckDBLog.close() did not return"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's log file goes (its parent directory does not exist yet)."""
    return tmp_path / "logs" / "banditroute.duckdb"


@pytest.fixture
def event_log(db_path: Path) -> Iterator[DuckDBLog]:
    """An open DuckDBLog, closed after the test."""
    log = DuckDBLog(db_path, flush_interval_s=0.01)
    yield log
    _close_within(log)


def test_rows_read_back_after_close(db_path: Path, records: SimpleNamespace) -> None:
    """Decisions, feedback and settlements are in the file after close, with list and JSON
    columns, NULLs and UTC timestamps as written."""
    log = DuckDBLog(db_path)
    decisions = [records.decision(i, time=records.t0 + i) for i in range(3)]
    for decision in decisions:
        log.append_decision(decision)
    log.append_feedback(records.feedback(decisions[0].decision_id, reward=-0.25))
    log.append_settlement(records.settlement(decisions[1].decision_id))
    _close_within(log)

    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute(
            "SELECT decision_id, time, tenant, request_id, objective, prompt_hash, prompt, "
            "features, eligible, probabilities, model, probability, policy_version, explored, "
            "tags FROM decisions ORDER BY decision_id"
        ).fetchall()
        feedback = con.execute("SELECT * FROM feedback").fetchall()
        settlements = con.execute("SELECT * FROM settlements").fetchall()
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'decisions'"
            ).fetchall()
        )
    assert len(rows) == 3
    for row, expected in zip(rows, decisions, strict=True):
        assert row[0] == expected.decision_id
        assert row[1] == datetime.fromtimestamp(expected.time, tz=UTC)
        assert row[2:7] == (
            expected.tenant,
            expected.request_id,
            expected.objective,
            expected.prompt_hash,
            expected.prompt,
        )
        assert json.loads(row[7]) == expected.features
        assert row[8] == ["model-a", "model-b", "model-c"]
        assert row[9] == [0.5, 0.3, 0.2]
        assert row[10:14] == (
            expected.model,
            expected.probability,
            expected.policy_version,
            expected.explored,
        )
        assert json.loads(row[14]) == expected.tags
    assert rows[1][6] is None  # odd decisions carry no prompt text
    assert types["eligible"] == "VARCHAR[]"
    assert types["probabilities"] == "DOUBLE[]"
    assert types["features"] == "JSON"

    (fb,) = feedback
    assert fb[0] == decisions[0].decision_id
    assert fb[1] == datetime.fromtimestamp(records.t0 + 1.0, tz=UTC)
    assert fb[2:] == ("model-b", 0.8, None, 120, None, 350.5, "OK", -0.25, "LEARNED")
    assert settlements == [
        (
            decisions[1].decision_id,
            datetime.fromtimestamp(records.t0 + 700.0, tz=UTC),
            "skipped",
            None,
        )
    ]


def test_flush_makes_rows_visible(db_path: Path, records: SimpleNamespace) -> None:
    """Decisions wait for a fuller batch (up to the flush interval); flush() commits them."""
    log = DuckDBLog(db_path, flush_interval_s=5.0)
    try:
        for i in range(10):
            log.append_decision(records.decision(i))
        assert count_rows(db_path, "decisions") == 0
        log.flush()
        assert count_rows(db_path, "decisions") == 10
    finally:
        _close_within(log)


def test_acknowledged_feedback_survives_a_crash(
    db_path: Path, tmp_path: Path, records: SimpleNamespace
) -> None:
    """Once a feedback's commit is done, its row and the decisions before it are in the
    journal: a log started on what a kill -9 leaves behind (a copy of the journal, the writer
    never having run) moves both into its database."""
    log = DuckDBLog(db_path, flush_interval_s=60.0)
    try:
        log.append_decision(records.decision(0))
        commit = log.append_feedback(records.feedback("dec-00000"))
        commit.wait(0.0)
        crashed = tmp_path / "crashed" / "banditroute.duckdb"
        crashed.parent.mkdir()
        shutil.copytree(log.journal_dir, crashed.with_name(crashed.name + ".journal"))
    finally:
        _close_within(log)
    restarted = DuckDBLog(crashed)
    try:
        restarted.flush()
        assert count_rows(crashed, "feedback") == 1
        assert count_rows(crashed, "decisions") == 1
    finally:
        _close_within(restarted)


def test_many_feedback_commits_complete(event_log: DuckDBLog, records: SimpleNamespace) -> None:
    """Every commit handed out completes (group commit serves all waiters)."""
    commits = [event_log.append_feedback(records.feedback(f"dec-{i}")) for i in range(200)]
    for commit in commits:
        commit.wait(5.0)


def test_unsettled_returns_window_decisions_with_their_feedback(
    event_log: DuckDBLog, records: SimpleNamespace
) -> None:
    """unsettled(since) reads back decisions at or after `since` without a settlement, equal to
    what was written, each with its feedback in time order."""
    t0 = records.t0
    old = records.decision(0, time=t0 - 100.0)
    at_edge = records.decision(1, time=t0 - 50.0)
    settled = records.decision(2, time=t0)
    fresh = records.decision(3, time=t0 + 1.5)
    for decision in (old, at_edge, settled, fresh):
        event_log.append_decision(decision)
    second = records.feedback(fresh.decision_id, time=t0 + 3.0, reward=0.2)
    first = records.feedback(fresh.decision_id, time=t0 + 2.0, reward=0.1)
    for row in (second, records.feedback(settled.decision_id), first):
        event_log.append_feedback(row)
    event_log.append_feedback(records.feedback(old.decision_id))
    event_log.append_settlement(records.settlement(settled.decision_id))
    result = event_log.unsettled(t0 - 50.0)
    assert [d.decision_id for d, _ in result] == [at_edge.decision_id, fresh.decision_id]
    assert result[0] == (at_edge, [])
    assert result[1] == (fresh, [first, second])


def test_tenant_spend_counts_each_served_call_once(
    event_log: DuckDBLog, records: SimpleNamespace
) -> None:
    """A budget restored from the log is charged as the live budget was: each served model's
    first report of a decision costs, repeated reports (IGNORED_DUPLICATE, a fallback reported
    twice) cost nothing more, and only reports since the period start count."""
    t0 = records.t0
    event_log.append_decision(records.decision(0))
    event_log.append_decision(records.decision(1, tenant="beta"))
    first = dataclasses.replace(records.feedback("dec-00000"), cost_usd=0.05)
    duplicate = dataclasses.replace(first, disposition="IGNORED_DUPLICATE")
    fallback = dataclasses.replace(
        first, model="model-a", cost_usd=0.02, disposition="RECORDED_OFF_POLICY"
    )
    for row in (
        first,
        dataclasses.replace(duplicate, time=t0 + 2.0),
        dataclasses.replace(duplicate, time=t0 + 3.0, cost_usd=0.5),
        dataclasses.replace(fallback, time=t0 + 4.0),
        dataclasses.replace(fallback, time=t0 + 5.0),
        dataclasses.replace(first, decision_id="dec-00001", cost_usd=1.0),
    ):
        event_log.append_feedback(row)
    spend, decisions = event_log.tenant_spend("acme", t0)
    assert (spend, decisions) == (pytest.approx(0.07), 1)
    assert event_log.tenant_spend("acme", t0 + 1.5) == (pytest.approx(0.02), 1)


def test_reopened_file_keeps_rows(db_path: Path, records: SimpleNamespace) -> None:
    """A new DuckDBLog on the same file (a restart) sees the rows the previous one wrote."""
    log = DuckDBLog(db_path)
    log.append_decision(records.decision(7))
    _close_within(log)
    reopened = DuckDBLog(db_path)
    try:
        assert [d for d, _ in reopened.unsettled(records.t0 - 1.0)] == [records.decision(7)]
    finally:
        _close_within(reopened)


def test_batch_of_5000_decisions(db_path: Path, records: SimpleNamespace) -> None:
    """5000 decisions and 5000 feedback rows queued at once are all inserted (several batches)."""
    log = DuckDBLog(db_path, flush_interval_s=0.01, batch_size=2048)
    try:
        for i in range(5000):
            log.append_decision(records.decision(i, time=records.t0 + i / 1000))
        commits = [log.append_feedback(records.feedback(f"dec-{i:05d}")) for i in range(5000)]
        log.flush()
        commits[-1].wait(1.0)
    finally:
        _close_within(log)
    with duckdb.connect(str(db_path), read_only=True) as con:
        counts = con.execute(
            "SELECT (SELECT count(*) FROM decisions), (SELECT count(DISTINCT decision_id) "
            "FROM decisions), (SELECT count(*) FROM feedback)"
        ).fetchone()
    assert counts == (5000, 5000, 5000)


def test_close_is_idempotent(db_path: Path, records: SimpleNamespace) -> None:
    """close() flushes, stops the writer and may be called again; an idle log closes too."""
    log = DuckDBLog(db_path, flush_interval_s=0.01)
    log.append_decision(records.decision(0))
    _close_within(log)
    _close_within(log)
    assert count_rows(db_path, "decisions") == 1
    idle = DuckDBLog(db_path.with_name("idle.duckdb"), flush_interval_s=0.01)
    threading.Event().wait(0.05)  # let the writer reach its idle wait
    _close_within(idle)


def test_without_sync_feedback_feedback_is_only_buffered(
    db_path: Path, records: SimpleNamespace
) -> None:
    """With sync_feedback off, a feedback's commit is done at once but its row waits in the
    buffer for the writer (nothing in the journal yet); flush() still moves it in."""
    log = DuckDBLog(db_path, flush_interval_s=60.0, sync_feedback=False)
    try:
        log.append_feedback(records.feedback("dec-00001")).wait(0.0)
        assert all(p.read_bytes() == b"" for p in log.journal_dir.iterdir())
        log.flush()
        assert count_rows(db_path, "feedback") == 1
    finally:
        _close_within(log)
