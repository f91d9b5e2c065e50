"""A decision's rows written to the event log: the decision, its feedback and its settlement,
each chained in the audit log first when auditing (the chain's sink then logs the row with
its record, in one piece), feedback a cluster replica accepts for the trainer (the decision is
another replica's), and audit events that describe no row (promotions, rollbacks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from banditroute.audit import AuditChain
from banditroute.audit_record import AuditKind
from banditroute.store.base import Commit, EventLog
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord
from banditroute.store.rows import LoggedRow


class ForTrainerLog(Protocol):
    """A log that takes feedback for the trainer (a cluster replica's shipping log)."""

    def append_for_trainer(self, record: FeedbackRecord, tenant: str) -> Commit:
        """Log ``record`` for the trainer with the caller's ``tenant``."""

    def sync(self) -> Commit:
        """A commit that completes once what was logged is durable."""


def log_decision(log: EventLog, audit: AuditChain | None, record: DecisionRecord) -> None:
    """Log the decision row, with its audit record when auditing."""
    if audit is None:
        log.append_decision(record)
        return
    _audited(
        audit, record, "decision", record, model=record.model, probability=record.probability,
        arm=record.arm, rule=record.rule, explored=record.explored,
    )  # fmt: skip


def log_feedback(
    log: EventLog, audit: AuditChain | None, decision: DecisionRecord, record: FeedbackRecord
) -> Commit:
    """Log the feedback row of ``decision`` (with its audit record when auditing); the commit
    completes once it is durable."""
    if audit is None:
        return log.append_feedback(record)
    _audited(audit, decision, "feedback", record, **_feedback_payload(record))
    return log.sync()


def log_for_trainer(
    log: ForTrainerLog, audit: AuditChain | None, tenant: str, record: FeedbackRecord
) -> Commit:
    """Log feedback accepted for the trainer (disposition ``FOR_TRAINER``) with the caller's
    ``tenant`` (with its audit record when auditing: the decision is not known here, so the
    record names only the tenant and the row); the commit completes once it is durable."""
    if audit is None:
        return log.append_for_trainer(record, tenant)
    audit.append(
        kind="feedback", tenant=tenant, decision_id=record.decision_id, time=record.time,
        policy_version="", feature_hash="", eligible=(), excluded={}, constraints={},
        payload=_feedback_payload(record), row=record,
    )  # fmt: skip
    return log.sync()


def _feedback_payload(record: FeedbackRecord) -> dict[str, Any]:
    """A feedback row's audit payload (the same for every feedback row)."""
    return {
        "model": record.model, "quality": record.quality, "cost_usd": record.cost_usd,
        "latency_ms": record.latency_ms, "status": record.status, "reward": record.reward,
        "disposition": record.disposition,
    }  # fmt: skip


def log_settlements(
    log: EventLog,
    audit: AuditChain | None,
    settled: Iterable[tuple[DecisionRecord, SettlementRecord]],
) -> None:
    """Log settlement rows, each of its decision (with their audit records when auditing)."""
    for decision, record in settled:
        if audit is None:
            log.append_settlement(record)
        else:
            _audited(audit, decision, "settlement", record, action=record.action,
                     reward=record.reward)  # fmt: skip


def log_event(
    audit: AuditChain | None,
    kind: AuditKind,
    version: str,
    payload: Mapping[str, Any],
    *,
    time: float,
    eligible: Iterable[str],
) -> int:
    """Chain an audit record that describes no logged row (a promotion's evidence, a
    rollback); returns its seq (0 without auditing)."""
    if audit is None:
        return 0
    record = audit.append(
        kind=kind, tenant="", decision_id="", time=time, policy_version=version,
        feature_hash="", eligible=eligible, payload=payload,
    )  # fmt: skip
    return record.seq


def _audited(
    audit: AuditChain, decision: DecisionRecord, kind: AuditKind, row: LoggedRow, **payload: Any
) -> None:
    """Chain an audit record for ``row`` (of ``decision``); the chain's sink logs the row with
    its record, in one piece."""
    audit.append(
        kind=kind, tenant=decision.tenant, decision_id=decision.decision_id, time=row.time,
        policy_version=decision.policy_version, feature_hash=decision.prompt_hash,
        eligible=decision.eligible, excluded=decision.excluded,
        constraints=decision.constraints, payload=payload, row=row,
    )  # fmt: skip


__all__ = [
    "ForTrainerLog", "log_decision", "log_event", "log_feedback", "log_for_trainer",
    "log_settlements",
]  # fmt: skip
