"""A replica's learning loop: its rows and updates go out through the outbox, snapshots come in.

:class:`ShippingLog` sits between the router and the replica's own decision log: every row
goes to the log as before and, as the same journal line, to the outbox (Feedback's line is
durable in both before the call is acknowledged). :class:`ReplicaLearning` owns the outbox,
the shipper and the snapshot follower, and hooks the router so every update its default policy
learns is numbered in the outbox and kept for re-learning on the next snapshot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from banditroute.audit import AuditRecord
from banditroute.cluster import replica_tag
from banditroute.cluster.changes import ChangeDesk
from banditroute.cluster.connection import client_errors, make_client, replica_name
from banditroute.cluster.events import Keys
from banditroute.cluster.follower import LocalUpdates, SnapshotFollower
from banditroute.cluster.orphans import joined_ids
from banditroute.cluster.outbox import Outbox, outbox_dir
from banditroute.cluster.promoter import ClusterPolicy
from banditroute.cluster.replica import ClusterReplica
from banditroute.cluster.shipper import Shipper
from banditroute.config import Settings
from banditroute.decisions import Disposition
from banditroute.policies.base import Policy
from banditroute.policies.sharing import SharedUpdate
from banditroute.router import Router
from banditroute.store.base import Commit, EventLog
from banditroute.store.journal_rows import (
    audit_line,
    decision_line,
    feedback_line,
    row_line,
    settlement_line,
    trainer_feedback_line,
)
from banditroute.store.records import DecisionRecord, FeedbackRecord, SettlementRecord

BACKGROUND_TIMEOUT_S = 5.0
"""The shipper's and follower's command timeout (a blocking read waits up to 0.5 s)."""


def _failed(error: BaseException) -> Commit:
    commit = Commit()
    commit.done(error)
    return commit


class ShippingLog:
    """An event log that also puts every row in the outbox (see the module doc)."""

    def __init__(self, inner: EventLog, outbox: Outbox) -> None:
        self.inner = inner
        self.outbox = outbox

    def admit(self) -> None:
        self.inner.admit()

    def append_decision(self, record: DecisionRecord) -> None:
        self.inner.append_decision(record)
        self.outbox.append(decision_line(record))

    def append_settlement(self, record: SettlementRecord) -> None:
        self.inner.append_settlement(record)
        self.outbox.append(settlement_line(record))

    def append_audit(self, record: AuditRecord) -> None:
        self.inner.append_audit(record)
        lines = [audit_line(record)]
        row = record.row
        if isinstance(row, FeedbackRecord) and row.disposition == Disposition.FOR_TRAINER:
            lines.append(trainer_feedback_line(row, record.tenant))
        elif row is not None:
            lines.append(row_line(row))
        self.outbox.append_many(lines)

    def _durable(self, commit: Commit) -> Commit:
        """``commit``, once the outbox has every line too (failed if it could not)."""
        try:
            commit.wait(0)
        except TimeoutError:
            pass  # not complete yet: the caller waits for it
        except BaseException:
            return commit
        try:
            self.outbox.sync()
        except OSError as exc:
            return _failed(exc)
        return commit

    def append_feedback(self, record: FeedbackRecord) -> Commit:
        commit = self.inner.append_feedback(record)
        self.outbox.append(feedback_line(record))
        return self._durable(commit)

    def append_for_trainer(self, record: FeedbackRecord, tenant: str) -> Commit:
        """Log feedback for another replica's decision (disposition ``FOR_TRAINER``) and put
        it in the outbox with the caller's tenant; the commit completes once both are
        durable."""
        commit = self.inner.append_feedback(record)
        self.outbox.append(trainer_feedback_line(record, tenant))
        return self._durable(commit)

    def sync(self) -> Commit:
        return self._durable(self.inner.sync())

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    def unsettled(self, since: float) -> list[tuple[DecisionRecord, list[FeedbackRecord]]]:
        return self.inner.unsettled(since)


@dataclass(frozen=True)
class LearningStatus:
    """What GetStats reports of the replica's learning loop."""

    source: str
    snapshot_version: int
    snapshot_age_s: float | None
    snapshot_checksum: str
    backlog: int
    acknowledged: int
    last_error: str


class ReplicaLearning:
    """The outbox, shipper and follower of one replica (started and stopped with the server):
    :meth:`wrap` the decision log before the router is built, :meth:`attach` the router after."""

    def __init__(
        self,
        log_path: Path,
        source: str,
        keys: Keys,
        *,
        client: Any,
        follower_client: Any,
        snapshot_period_s: float,
        errors: tuple[type[BaseException], ...] = (OSError,),
        fsync: bool = False,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.outbox = Outbox(outbox_dir(log_path), source, fsync=fsync)
        self._client = client
        self._tags = tuple(dict.fromkeys((*tags, replica_tag(self.outbox.source))))
        self._router: Router | None = None
        self._log: ShippingLog | None = None
        self.settled_joined = 0
        self.local = LocalUpdates()
        self.shipper = Shipper(self.outbox, client, keys, errors=errors)
        self._keys = keys
        self._follower_client = follower_client
        self._period_s = snapshot_period_s
        self._errors = errors
        self._follower: SnapshotFollower | None = None
        self._stopped = False

    @property
    def follower(self) -> SnapshotFollower:
        assert self._follower is not None, "attach() the router first"
        return self._follower

    def wrap(self, event_log: EventLog) -> ShippingLog:
        """The event log the router (and the audit chain) should write to."""
        self._log = ShippingLog(event_log, self.outbox)
        return self._log

    @property
    def shipping_log(self) -> ShippingLog:
        """The log :meth:`wrap` made."""
        assert self._log is not None, "wrap() the event log first"
        return self._log

    def attach(
        self,
        router: Router,
        build: Callable[[], Policy],
        recipes: Callable[[str], Policy] | None = None,
    ) -> None:
        """Number and keep every update ``router``'s default policy learns, and keep its
        policy at the trainer's snapshot (``build`` makes an empty learner to restore into;
        ``recipes`` one of a promoted policy's recipe)."""
        router.on_learn = self._learned
        self._router = router
        self._follower = SnapshotFollower(
            router, build, self._follower_client, self._keys, source=self.outbox.source,
            local=self.local, period_s=self._period_s, errors=self._errors, recipes=recipes,
        )  # fmt: skip

    def policy_changes(self, router: Router) -> ClusterPolicy:
        """Promotions and rollbacks of the cluster's live policy from this replica (after
        :meth:`attach`)."""
        desk = ChangeDesk(self._follower_client, self._keys)
        return ClusterPolicy(desk, self.follower, router, errors=self._errors)

    def _learned(self, update: SharedUpdate) -> None:
        self.local.add(self.outbox.append_update(update.as_dict()), update)

    def settle_joined(self) -> int:
        """Mark this replica's pending decisions whose feedback the trainer joined while it
        was gone as learned (a client's retry here is then a duplicate); returns how many."""
        if self._router is None:
            return 0
        marked = 0
        for tag in self._tags:
            try:
                ids = joined_ids(self._client, self._keys, tag)
            except self._errors:
                return marked  # the server is down: the next beat asks again
            marked += self._router.settle_joined(ids)
        self.settled_joined += marked
        return marked

    def report_to(self, cluster: ClusterReplica) -> None:
        """Start and stop with ``cluster`` and report the snapshot in use and the backlog to
        its GetStats every heartbeat."""

        def report() -> None:
            status = self.status()
            if status.snapshot_version:
                cluster.report_snapshot(str(status.snapshot_version), self.follower.published)
            cluster.report_backlog(status.backlog)
            self.settle_joined()

        cluster.every_beat(report)
        cluster.add(self)

    def start(self) -> None:
        self.follower.check()  # the published snapshot, before the first Route if possible
        self.settle_joined()  # and the trainer's joins, before the first Feedback
        self.shipper.start()
        self.follower.start()

    def stop(self) -> None:
        """Stop both threads (after the router's last row: the shipper sends what it can)."""
        if self._stopped:
            return
        self._stopped = True
        self.follower.stop()
        self.shipper.stop()
        self.outbox.close()

    def status(self) -> LearningStatus:
        follower = self.follower
        return LearningStatus(
            source=self.outbox.source,
            snapshot_version=follower.version,
            snapshot_age_s=follower.age_s,
            snapshot_checksum=follower.checksum,
            backlog=self.shipper.backlog,
            acknowledged=self.shipper.acked,
            last_error=self.shipper.last_error or follower.last_error,
        )


def replica_learning(settings: Settings, log_path: Path) -> ReplicaLearning:
    """The learning loop of this replica of ``settings.cluster``, whose decision log is at
    ``log_path``, with clients of its own for the shipper and the follower (their reads may
    block; Route's connection never waits behind them)."""
    cluster = settings.cluster

    def client() -> Any:
        return make_client(
            cluster.url, timeout_s=BACKGROUND_TIMEOUT_S,
            connect_timeout_s=cluster.connect_timeout_s,
            name=f"{cluster.key_prefix}-{replica_name(cluster)}-learning"[:64],
        )  # fmt: skip

    return ReplicaLearning(
        log_path, replica_name(cluster), Keys(cluster.key_prefix),
        client=client(), follower_client=client(),
        snapshot_period_s=cluster.snapshot_period_s, errors=client_errors(),
        fsync=settings.log.fsync, tags=(replica_tag(replica_name(cluster)),),
    )  # fmt: skip


__all__ = ["LearningStatus", "ReplicaLearning", "ShippingLog", "replica_learning"]
