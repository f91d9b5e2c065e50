"""The event log contract the router writes to and restores from.

Implementations: :class:`banditroute.store.memory.MemoryLog` (tests, simulations) and
:class:`banditroute.store.duckdb_log.DuckDBLog` (the service). ``append_*`` never block on
disk; ``append_feedback`` returns a :class:`Commit` the caller may wait on when feedback must
be durable before it is acknowledged.
"""

from __future__ import annotations

import threading
from typing import Protocol

from banditroute.audit import AuditRecord
from banditroute.errors import Unavailable
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord


class Commit:
    """Completion of one logged row: ``wait`` returns once it is committed or raises why not."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._error: BaseException | None = None

    def done(self, error: BaseException | None = None) -> None:
        """Mark the row committed (or failed with ``error``)."""
        self._error = error
        self._event.set()

    def wait(self, timeout: float | None = None) -> None:
        """Block until committed; raise the write error, or TimeoutError."""
        if not self._event.wait(timeout):
            raise TimeoutError("the log did not commit in time")
        if self._error is not None:
            raise self._error


COMMITTED = Commit()
COMMITTED.done()

COMMIT_TIMEOUT_S = 10.0
"""How long Feedback waits for its log commit before answering UNAVAILABLE (read at each
:func:`acknowledge`, the one place that waits)."""


def acknowledge(commit: Commit) -> None:
    """Wait for a feedback's commit before acknowledging it; Unavailable (the client
    retries) if it failed or did not complete within :data:`COMMIT_TIMEOUT_S`."""
    try:
        commit.wait(COMMIT_TIMEOUT_S)
    except Exception as exc:
        raise Unavailable(f"feedback was not committed to the log: {exc}; retry the call") from exc


class EventLog(Protocol):
    """Where decisions, feedback and settlements go, and where a restart reads them back."""

    def admit(self) -> None:
        """Raise :class:`~banditroute.errors.Unavailable` when the log cannot take another
        decision or feedback now (rows it could not write yet are at their bound)."""

    def append_decision(self, record: DecisionRecord) -> None:
        """Queue a decision row."""

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        """Queue a feedback row; the returned commit completes when it is durable."""

    def append_settlement(self, record: SettlementRecord) -> None:
        """Queue a settlement row."""

    def append_audit(self, record: AuditRecord) -> None:
        """Queue an audit row (in chain order) together with the row it describes
        (``record.row``, if any), as one piece: no crash or segment boundary may separate
        them. Called with the chain's lock held: it must be quick."""

    def sync(self) -> Commit:
        """Make every row queued so far durable, as ``append_feedback`` does for its row (an
        audited feedback goes in with its record, then this is called)."""

    def flush(self) -> None:
        """Block until every queued row is committed."""

    def close(self) -> None:
        """Flush and release the log."""

    def unsettled(self, since: float) -> list[tuple[DecisionRecord, list[FeedbackRecord]]]:
        """Decisions made at or after ``since`` without a settlement, with their feedback."""
