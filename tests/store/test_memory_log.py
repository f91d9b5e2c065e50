"""MemoryLog: the in-memory event log keeps every row and answers restores like DuckDBLog."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from banditroute.store.memory import MemoryLog


def test_rows_are_kept_in_order(records: SimpleNamespace) -> None:
    """Decisions, feedback and settlements are stored as appended, in order."""
    log = MemoryLog()
    decisions = [records.decision(i) for i in range(3)]
    for decision in decisions:
        log.append_decision(decision)
    feedback = records.feedback(decisions[1].decision_id)
    log.append_feedback(feedback)
    settlement = records.settlement(decisions[0].decision_id)
    log.append_settlement(settlement)
    log.flush()
    assert log.decisions == decisions
    assert log.feedback == [feedback]
    assert log.settlements == [settlement]


def test_feedback_commit_is_immediate(records: SimpleNamespace) -> None:
    """append_feedback returns a commit that is already done (memory needs no disk)."""
    log = MemoryLog()
    log.append_feedback(records.feedback("x")).wait(0.0)


def test_unsettled_returns_decisions_in_window_without_settlement(
    records: SimpleNamespace,
) -> None:
    """unsettled(since) lists decisions at or after `since` with no settlement, each with its
    feedback in arrival order."""
    t0 = records.t0
    log = MemoryLog()
    old = records.decision(0, time=t0 - 100.0)
    at_edge = records.decision(1, time=t0 - 50.0)
    settled = records.decision(2, time=t0)
    fresh = records.decision(3, time=t0 + 1.0)
    for decision in (old, at_edge, settled, fresh):
        log.append_decision(decision)
    first = records.feedback(fresh.decision_id, time=t0 + 2.0, reward=0.1)
    second = records.feedback(fresh.decision_id, time=t0 + 3.0, reward=0.2)
    for row in (first, records.feedback(settled.decision_id), second):
        log.append_feedback(row)
    log.append_settlement(records.settlement(settled.decision_id))
    result = log.unsettled(t0 - 50.0)
    assert [d.decision_id for d, _ in result] == [at_edge.decision_id, fresh.decision_id]
    assert result[0] == (at_edge, [])
    assert result[1] == (fresh, [first, second])


def test_appends_from_many_threads_are_all_kept(records: SimpleNamespace) -> None:
    """Concurrent appends lose no row."""
    log = MemoryLog()

    def worker(offset: int) -> None:
        for i in range(250):
            log.append_decision(records.decision(offset + i))

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(log.decisions) == 1000
    assert len({d.decision_id for d in log.decisions}) == 1000


def test_close_is_idempotent(records: SimpleNamespace) -> None:
    """close() may be called twice and keeps the rows readable."""
    log = MemoryLog()
    log.append_decision(records.decision(0))
    log.close()
    log.close()
    assert len(log.decisions) == 1
