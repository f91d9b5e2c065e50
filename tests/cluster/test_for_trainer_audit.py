"""Feedback a replica accepts for the trainer is audited as every other feedback row is (the
shared :mod:`banditroute.audited_rows` helper), without a server."""

from __future__ import annotations

from pathlib import Path

import orjson

from banditroute.audit import AuditChain, AuditRecord
from banditroute.cluster import replica_tag
from banditroute.cluster.learning import ShippingLog
from banditroute.cluster.orphans import FeedbackForTrainer
from banditroute.cluster.outbox import Outbox
from banditroute.cluster.trainer import build_learner
from banditroute.config import load_settings
from banditroute.decisions import Disposition, FeedbackReport, RouteQuery
from banditroute.router import DecisionIds, Router
from banditroute.store.memory import MemoryLog


def test_forwarded_feedback_is_audited_as_the_owners_feedback_is(tmp_path: Path) -> None:
    """With auditing, feedback accepted for a gone replica's decision chains a ``feedback``
    record with the same payload fields as the owner's own feedback (the fragments, reward,
    disposition), naming the caller's tenant, with the FOR_TRAINER row as its row; the
    outbox ships the row with the tenant for the trainer."""
    settings = load_settings()
    records: list[AuditRecord] = []
    outbox = Outbox(tmp_path / "outbox", "b")
    log = ShippingLog(MemoryLog(), outbox)

    def sink(record: AuditRecord) -> None:
        records.append(record)
        log.append_audit(record)

    router = Router(
        settings, build_learner(settings), log, audit=AuditChain(sink=sink),
        new_id=DecisionIds(prefix=replica_tag("b")),
    )  # fmt: skip
    try:
        own = router.route(RouteQuery(prompt="Hi there")).decision_id
        router.feedback(FeedbackReport(own, quality=1.0, cost_usd=0.001))
        gone = replica_tag("a") + "0" * 24
        result = FeedbackForTrainer(router, log).accept(
            FeedbackReport(gone, quality=0.5, cost_usd=0.002, latency_ms=80.0)
        )
        assert result.disposition == Disposition.FOR_TRAINER
        owner, forwarded = (r for r in records if r.kind == "feedback")
        assert forwarded.decision_id == gone
        assert forwarded.tenant == "default"
        assert set(forwarded.payload) == set(owner.payload)
        assert forwarded.payload["disposition"] == "FOR_TRAINER"
        assert (forwarded.payload["quality"], forwarded.payload["cost_usd"]) == (0.5, 0.002)
        assert forwarded.row is not None
        assert forwarded.row.disposition == Disposition.FOR_TRAINER  # type: ignore[union-attr]
        shipped = [orjson.loads(line.data) for line in outbox.read(0, max_lines=100,
                                                                   max_bytes=1 << 20)]  # fmt: skip
        (row,) = [r for r in shipped if r.get("disposition") == "FOR_TRAINER"]
        assert (row["decision_id"], row["tenant"]) == (gone, "default")
    finally:
        outbox.close()
