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

    replica = ClusterReplica(settings.cluster, address="")
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


__all__ = ["REPLICA_TAG_HEX", "join_cluster", "replica_tag"]
