"""SharedSessions against a real valkey-server, in one process: what a replica's queued
outcome does to the binding every replica reads."""

from __future__ import annotations

from valkey_helpers import ValkeyProcess

from banditroute.cluster.connection import ClusterLink
from banditroute.cluster.shared_sessions import SharedSessions
from banditroute.config import ClusterSettings
from banditroute.sessions import SessionSettings, SessionTable

SETTINGS = SessionSettings()
KEY = ("acme", "0" * 32)


def _sessions(url: str, replica: str) -> tuple[ClusterLink, SharedSessions]:
    link = ClusterLink(ClusterSettings(url=url, replica_id=replica))
    return link, SharedSessions(link, SessionTable(), lambda session_id: session_id)


def test_a_failure_then_the_same_model_rechosen_stays_sticky_everywhere(
    valkey_server: ValkeyProcess,
) -> None:
    """The session's model fails on replica A (queued for A's next heartbeat), A's next
    decision draws afresh and picks the same model again: after A's heartbeat both A and
    another replica keep the session on that model (the re-choice supersedes the failure)."""
    link_a, a = _sessions(valkey_server.url, "a")
    link_b, b = _sessions(valkey_server.url, "b")
    try:
        a.assign(KEY, "alpha", 0.0, SETTINGS)
        assert b.model(KEY, 0.0, SETTINGS) == "alpha"
        a.outcome(KEY, "alpha", ok=False)
        assert a.model(KEY, 1.0, SETTINGS) is None  # the failure ends stickiness at once
        a.assign(KEY, "alpha", 1.0, SETTINGS)  # drawn afresh: the same model again
        a.beat()
        assert a.model(KEY, 2.0, SETTINGS) == "alpha"
        assert b.model(KEY, 2.0, SETTINGS) == "alpha"
    finally:
        link_a.close()
        link_b.close()


def test_a_failure_not_followed_by_a_new_choice_reaches_the_other_replicas(
    valkey_server: ValkeyProcess,
) -> None:
    """A failure reported on replica A and sent at A's heartbeat ends the session's
    stickiness on replica B too."""
    link_a, a = _sessions(valkey_server.url, "a")
    link_b, b = _sessions(valkey_server.url, "b")
    try:
        a.assign(KEY, "alpha", 0.0, SETTINGS)
        a.outcome(KEY, "alpha", ok=False)
        a.beat()
        assert b.model(KEY, 1.0, SETTINGS) is None
    finally:
        link_a.close()
        link_b.close()
