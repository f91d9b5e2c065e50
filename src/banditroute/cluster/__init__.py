"""Replicas on several machines working together through one Valkey/Redis server.

``[cluster] url`` (or ``serve --cluster URL``) turns it on; without it nothing here runs
and a server behaves as a lone one. :mod:`~banditroute.cluster.connection` holds the
client with bounded timeouts and the degraded circuit every other part goes through.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from banditroute.cluster.replica import ClusterReplica
    from banditroute.config import Settings
    from banditroute.router import Router


REPLICA_TAG_HEX = 8
"""Hex digits of a replica's tag, the start of every decision id it makes."""
DECISION_SLACK_S = 60.0
"""Clock difference allowed between replicas (and the trainer) when judging whether feedback
falls within its decision's reward window."""


def feedback_horizon_s(window_s: float) -> float:
    """How long after a decision its feedback may still reach the cluster (the reward window
    ``window_s`` and :data:`DECISION_SLACK_S`): what the cluster keeps to accept and join such
    feedback (replica tags, the trainer's announced joins) need live no longer."""
    return window_s + DECISION_SLACK_S


def replica_tag(replica_id: str) -> str:
    """The hex digits that start every decision id replica ``replica_id`` makes, so Feedback
    reaching another replica is forwarded to it (a hash: ids do not show replica names)."""
    return hashlib.blake2b(replica_id.encode(), digest_size=REPLICA_TAG_HEX // 2).hexdigest()


def join_cluster(settings: Settings, router: Router) -> ClusterReplica:
    """This process as a replica of ``settings.cluster``: its link and heartbeat, and the
    router's budgets, limits, breakers and sessions shared with the other replicas. The returned
    replica is started by the server (after its first heartbeat the parts start)."""
    from banditroute.cluster.breakers import SharedBreakers
    from banditroute.cluster.limits import SharedLimits
    from banditroute.cluster.replica import ClusterReplica
    from banditroute.cluster.shared_sessions import SharedSessions

    replica = ClusterReplica(
        settings.cluster,
        address="",
        keep_tags_s=lambda: feedback_horizon_s(router.settings.reward.window_s),
    )
    limits = SharedLimits(
        replica.link,
        replica.registry,
        router.health,
        lambda: router.settings,
        router.budget_status,
    )
    router.shared = limits
    replica.every_beat(limits.beat)
    replica.add(limits)
    replica.add(SharedBreakers(replica.link, router.health))
    sessions = SharedSessions(replica.link, router.sessions, router.session_hash)
    router.sessions, router.session_hash = sessions, sessions.session_hash
    replica.every_beat(sessions.beat)
    return replica


__all__ = [
    "DECISION_SLACK_S", "REPLICA_TAG_HEX", "feedback_horizon_s", "join_cluster", "replica_tag",
]  # fmt: skip
