"""Feedback for the decision of a replica that is gone: accepted here, joined by the trainer.

A load balancer may send Feedback to any replica. When the replica that made the decision is
alive it is forwarded there (:mod:`banditroute.server.replica_peers`); when its heartbeats have
stopped (killed, its machine down) the receiving replica cannot learn it (it does not hold the
decision), but it must not lose it either. :class:`FeedbackForTrainer` checks the report as the
owner would (sizes, ranges, the model against the catalogue and the caller's allow-list, and a
well-formed decision id carrying a replica tag), writes it durably to this replica's own log and
outbox as a feedback row with disposition ``FOR_TRAINER`` (the outbox line also names the
caller's tenant), and acknowledges it. The trainer joins the row with the owner's decision row
and learns it exactly once (:mod:`banditroute.cluster.joiner`).

The owner learns of the trainer's joins through :func:`joined_ids` (the trainer publishes the
decision ids it learned this way, per replica tag): a replica restarted on its log marks those
of its restored decisions as learned, so a client's retry is a duplicate there too.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from banditroute import audited_rows, rewards
from banditroute.cluster import REPLICA_TAG_HEX
from banditroute.cluster.events import Keys
from banditroute.decisions import Disposition, FeedbackReport, FeedbackResult
from banditroute.errors import NotFound
from banditroute.router import Router
from banditroute.store.base import acknowledge
from banditroute.store.records import FeedbackRecord

if TYPE_CHECKING:
    from banditroute.cluster.learning import ShippingLog

DECISION_ID_HEX = 32
"""A decision id is 32 lowercase hex digits (:class:`banditroute.router.DecisionIds`)."""
MAX_JOINED_READ = 10_000
"""The most decision ids a replica reads of the trainer's joins per heartbeat (the trainer
keeps no more than this per replica tag)."""
_HEX = frozenset("0123456789abcdef")


def well_formed(decision_id: str) -> bool:
    """Whether ``decision_id`` could be a cluster replica's decision id (32 lowercase hex
    digits, the first :data:`~banditroute.cluster.REPLICA_TAG_HEX` the replica's tag)."""
    return len(decision_id) == DECISION_ID_HEX and set(decision_id) <= _HEX


class FeedbackForTrainer:
    """Accepts Feedback for a gone replica's decision (see the module doc)."""

    def __init__(
        self, router: Router, log: ShippingLog, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._router = router
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self.accepted = 0

    def accept(self, report: FeedbackReport) -> FeedbackResult:
        """Check ``report`` and make it durable for the trainer; its acknowledgement.
        NotFound for an id no replica could have made; InvalidArgument or PermissionDenied
        naming the field for a report the owner would refuse too."""
        if not well_formed(report.decision_id):
            raise NotFound(
                "decision_id: no pending decision with this id (not a decision id this "
                "cluster makes)",
                field="decision_id",
            )
        router = self._router
        settings = router.settings
        tenant = settings.access.tenants.get(report.tenant)
        if report.model:
            served = settings.catalog.get(report.model, field="model")
            if tenant is not None:
                tenant.check_model(served.id, field="model")
            # A cost left out comes from the named model's prices, as the owner's router
            # fills it (rewards.fragments).
            fragments = rewards.fragments(report, served, settings.reward)
        else:
            # The chosen model is in the decision row, not here: the trainer fills the cost
            # in the central log when it joins the row (CentralLog.fill_costs).
            fragments = rewards.check_report(report, settings.reward)
        self._log.admit()
        # Reward 0: the trainer computes it under the decision's objective.
        record = FeedbackRecord(
            report.decision_id, self._clock(), report.model, fragments.quality,
            fragments.cost_usd, report.input_tokens, report.output_tokens,
            fragments.latency_ms, str(fragments.status), 0.0, str(Disposition.FOR_TRAINER),
        )  # fmt: skip
        commit = audited_rows.log_for_trainer(self._log, router.audit, report.tenant, record)
        if settings.log.sync_feedback:
            acknowledge(commit)
        with self._lock:
            self.accepted += 1
        return FeedbackResult(0.0, Disposition.FOR_TRAINER, 0)


def joined_ids(client: Any, keys: Keys, tag: str) -> list[str]:
    """The decision ids of replica tag ``tag`` whose feedback the trainer joined and learned
    (at most :data:`MAX_JOINED_READ`, the newest)."""
    raw = client.zrange(keys.joined(tag), -MAX_JOINED_READ, -1)
    return [m.decode() if isinstance(m, bytes) else str(m) for m in raw][:MAX_JOINED_READ]


def announce_joins(
    client: Any, keys: Keys, joined: Iterable[tuple[str, float]], oldest: float, keep_s: float
) -> None:
    """Tell the owners which of their decisions the trainer learned from forwarded feedback
    (decision id, when it was accepted): a sorted set per replica tag, trimmed to those
    accepted since ``oldest`` (an owner's decision still pending, at most) and the newest
    :data:`MAX_JOINED_READ`, that expires ``keep_s`` after its newest join (by then none of
    its decisions can be pending: an owner that never comes back leaves nothing behind)."""
    by_tag: dict[str, dict[str, float]] = {}
    for decision_id, at in joined:
        if at >= oldest:
            by_tag.setdefault(decision_id[:REPLICA_TAG_HEX], {})[decision_id] = at
    for tag, members in by_tag.items():
        key = keys.joined(tag)
        client.zadd(key, members)
        client.zremrangebyscore(key, "-inf", oldest)
        client.zremrangebyrank(key, 0, -MAX_JOINED_READ - 1)
        client.expire(key, max(1, math.ceil(keep_s)))


__all__ = [
    "DECISION_ID_HEX", "FeedbackForTrainer", "announce_joins", "joined_ids", "well_formed",
]  # fmt: skip
