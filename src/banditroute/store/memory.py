"""An in-memory event log for tests and simulations: same contract, no disk."""

from __future__ import annotations

import threading

from banditroute.audit import AuditRecord
from banditroute.store.base import COMMITTED, Commit
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord


class MemoryLog:
    """Keeps every row in lists; rows are 'committed' as soon as they are appended."""

    def __init__(self) -> None:
        self.decisions: list[DecisionRecord] = []
        self.feedback: list[FeedbackRecord] = []
        self.settlements: list[SettlementRecord] = []
        self.audit: list[AuditRecord] = []
        self._lock = threading.Lock()

    def admit(self) -> None:
        """Always: memory takes every row."""

    def append_decision(self, record: DecisionRecord) -> None:
        with self._lock:
            self.decisions.append(record)

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        with self._lock:
            self.feedback.append(record)
        return COMMITTED

    def append_settlement(self, record: SettlementRecord) -> None:
        with self._lock:
            self.settlements.append(record)

    def append_audit(self, record: AuditRecord) -> None:
        with self._lock:
            self.audit.append(record)
        if isinstance(record.row, DecisionRecord):
            self.append_decision(record.row)
        elif isinstance(record.row, FeedbackRecord):
            self.append_feedback(record.row)
        elif record.row is not None:
            self.append_settlement(record.row)

    def sync(self) -> Commit:
        return COMMITTED

    def flush(self) -> None:
        """Nothing to do: rows are in memory already."""

    def close(self) -> None:
        """Nothing to release."""

    def unsettled(self, since: float) -> list[tuple[DecisionRecord, list[FeedbackRecord]]]:
        with self._lock:
            settled = {s.decision_id for s in self.settlements}
            by_decision: dict[str, list[FeedbackRecord]] = {}
            for fb in self.feedback:
                by_decision.setdefault(fb.decision_id, []).append(fb)
            return [
                (d, by_decision.get(d.decision_id, []))
                for d in self.decisions
                if d.time >= since and d.decision_id not in settled
            ]
