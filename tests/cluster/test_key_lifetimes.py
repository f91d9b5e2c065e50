"""Valkey keys the cluster writes as replicas come and go have bounded lifetimes, against a
real valkey-server: the tags of replicas gone for longer than their decisions' feedback may
arrive, and the trainer's announced joins once none of their decisions can be pending."""

from __future__ import annotations

import time
from collections.abc import Callable

from valkey_helpers import ValkeyProcess

from banditroute.cluster import replica_tag
from banditroute.cluster.connection import ClusterLink
from banditroute.cluster.events import Keys
from banditroute.cluster.orphans import announce_joins, joined_ids
from banditroute.cluster.registry import Registry
from banditroute.config import ClusterSettings

HANG_BOUND_S = 30.0
"""Generous bound that only catches a hang."""


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_gone_replicas_tag_is_forgotten_after_its_feedback_horizon(
    valkey_server: ValkeyProcess,
) -> None:
    """A replica's tag stays known after it stops beating (its decisions' feedback may still
    arrive) and is dropped once it has been silent for longer than the tag lifetime; a
    beating replica's tag stays. The key then holds only the live tag and has an expiry, and
    the set earlier versions kept for ever is given an expiry too."""
    server = valkey_server.client()
    server.sadd("t:replica-tags", "0123abcd")  # what an earlier version left behind
    links = [
        ClusterLink(
            ClusterSettings(url=valkey_server.url, key_prefix="t", replica_id=rid, heartbeat_s=0.05)
        )
        for rid in ("live", "gone")
    ]
    try:
        live, gone = (Registry(link, "x:1", keep_tags_s=lambda: 1.0) for link in links)
        gone.beat()
        assert 0 < server.pttl("t:replica-tags") <= 1000
        live.beat()
        assert live.has_tag(replica_tag("gone")) is True
        assert live.has_tag(replica_tag("never")) is False
        _wait_for(lambda: live.beat() == 1, "the silent replica to count as gone")
        assert live.has_tag(replica_tag("gone")) is True  # gone, but within its lifetime
        _wait_for(
            lambda: live.beat() == 1 and live.has_tag(replica_tag("gone")) is False,
            "the silent replica's tag to be dropped",
        )
        assert live.has_tag(replica_tag("live")) is True
        assert server.zcard("t:replica-tag-seen") == 1
        assert 0 < server.pttl("t:replica-tag-seen") <= 1000
        assert server.exists("t:replica-tags") == 0
    finally:
        for link in links:
            link.close()


def test_announced_joins_expire_once_none_can_be_pending(valkey_server: ValkeyProcess) -> None:
    """The trainer's announcement of the joins of a replica's decisions expires ``keep_s``
    after its newest join: an owner that never comes back (and no further join for its tag)
    leaves no key behind, while an owner back in time still reads its joins."""
    client = valkey_server.client()
    keys = Keys("t")
    tag = replica_tag("owner")
    decision_id = tag + "0" * 24
    now = time.time()
    announce_joins(client, keys, [(decision_id, now)], oldest=now - 10.0, keep_s=1.0)
    assert joined_ids(client, keys, tag) == [decision_id]
    assert 0 < client.pttl(keys.joined(tag)) <= 1000
    _wait_for(lambda: client.exists(keys.joined(tag)) == 0, "the announcement to expire")
