"""One replica's membership of the cluster: its link, its heartbeat, and what it reports.

:class:`ClusterReplica` owns the :class:`~banditroute.cluster.connection.ClusterLink` and the
:class:`~banditroute.cluster.registry.Registry`, runs a background thread that beats every
``cluster.heartbeat_s`` (the beat doubles as the probe that notices the server is back while no
Route is calling) and runs the periodic tasks other parts register (:meth:`every_beat`), and
assembles :class:`ReplicaStatus` for GetStats. Parts that learn (snapshots, event streams)
report their figures with :meth:`report_snapshot` and :meth:`report_backlog`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from banditroute.cluster.connection import ClusterLink
from banditroute.cluster.registry import Registry, default_keep_tags_s
from banditroute.config import ClusterSettings

log = structlog.get_logger(__name__)


class Part(Protocol):
    """Something the replica starts after its first heartbeat and stops before leaving."""

    def start(self) -> None:
        """Start background work."""

    def stop(self) -> None:
        """Finish and stop background work."""


@dataclass(frozen=True)
class ReplicaStatus:
    """What GetStats says of the cluster (see ``ClusterStatus`` in the proto)."""

    replica_id: str
    replicas_alive: int
    degraded: bool
    degraded_since: float | None
    snapshot_version: str
    snapshot_age_s: float | None
    stream_backlog: int
    feedback_for_trainer: int = 0


class ClusterReplica:
    """This process as one replica of the cluster (start, beat, report, leave)."""

    def __init__(
        self,
        settings: ClusterSettings,
        address: str,
        *,
        link: ClusterLink | None = None,
        keep_tags_s: Callable[[], float] = default_keep_tags_s,
    ) -> None:
        self.settings = settings
        self.link = link or ClusterLink(settings)
        self.registry = Registry(self.link, address, keep_tags_s=keep_tags_s)
        self._tasks: list[Callable[[], None]] = []
        self._parts: list[Part] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._snapshot: tuple[str, float] | None = None
        self._backlog = 0
        self._for_trainer: Callable[[], int] = lambda: 0

    @property
    def replica_id(self) -> str:
        """This replica's id."""
        return self.link.replica_id

    def every_beat(self, task: Callable[[], None]) -> None:
        """Run ``task()`` on the heartbeat thread after every beat (errors are logged)."""
        self._tasks.append(task)

    def add(self, part: Part) -> None:
        """Start ``part`` with the replica, stop it before the replica leaves (in reverse)."""
        self._parts.append(part)

    def report_snapshot(self, version: str, published_at: float) -> None:
        """The policy snapshot now in use: its version and when it was published (epoch s)."""
        self._snapshot = (version, published_at)

    def report_backlog(self, rows: int) -> None:
        """Journal rows the trainer has not acknowledged yet."""
        self._backlog = max(0, int(rows))

    def report_for_trainer(self, count: Callable[[], int]) -> None:
        """Where GetStats reads the feedback accepted for the trainer to join (decisions of
        replicas that were gone)."""
        self._for_trainer = count

    def start(self) -> None:
        """Beat once now (a server down at start leaves the replica degraded, not stopped)
        and keep beating in the background."""
        self.beat()
        for part in self._parts:
            part.start()
        self._thread = threading.Thread(target=self._run, name="cluster-heartbeat", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        """One heartbeat, then the registered tasks."""
        self.registry.beat()
        for task in self._tasks:
            try:
                task()
            except Exception:
                log.exception("cluster_task_failed")

    def _run(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            self.beat()

    def stop(self) -> None:
        """Stop beating and the parts, leave the registry and close the link."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for part in reversed(self._parts):
            try:
                part.stop()
            except Exception:
                log.exception("cluster_part_stop_failed")
        self.registry.leave()
        self.link.close()

    def status(self) -> ReplicaStatus:
        """The figures GetStats reports."""
        link = self.link.status()
        snapshot = self._snapshot
        return ReplicaStatus(
            replica_id=self.replica_id,
            replicas_alive=self.registry.alive,
            degraded=link.degraded,
            degraded_since=link.degraded_since,
            snapshot_version="" if snapshot is None else snapshot[0],
            snapshot_age_s=None if snapshot is None else max(0.0, time.time() - snapshot[1]),
            stream_backlog=self._backlog,
            feedback_for_trainer=self._for_trainer(),
        )


__all__ = ["ClusterReplica", "ReplicaStatus"]
