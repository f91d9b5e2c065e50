"""Which replicas are alive, and where they listen: a registry kept by heartbeats.

Each replica beats every ``cluster.heartbeat_s``: one script stamps it with the server's
clock (so replicas' clocks may disagree) in a sorted set, records its address in a hash, drops
replicas silent for three beats, and returns how many remain. Limits divided between replicas
when the server is gone use the last count known; feedback for a decision another replica made
is forwarded to the address :meth:`Registry.address_of` gives. The beat also reads the
server's *epoch*, a random token the first replica writes: a new epoch means the server lost
its data, and every replica writes its shared figures again (:meth:`Registry.on_renewed`).
The beat also gives the replica's decision-id tag a deadline in the tags the cluster knows
(:meth:`Registry.has_tag`): the time until which feedback for its decisions may still arrive
(its own reward window and a slack, :func:`~banditroute.cluster.feedback_horizon_s`), so each
tag lives for its own replica's window whatever the others' windows are, and a beat drops the
tags whose deadline has passed: that key stays as large as the replicas of the last reward
window, however many come and go.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import structlog

from banditroute.cluster import feedback_horizon_s, replica_tag
from banditroute.cluster.connection import ClusterLink
from banditroute.config import RewardSettings

log = structlog.get_logger(__name__)

MISSED_BEATS = 3
"""A replica silent for this many heartbeats counts as gone."""
TAGS_KEY = "replica-tag-until"
"""Sorted set of replica tags, each scored with its deadline (server milliseconds)."""
LEGACY_TAGS_KEY = "replica-tags"
"""The set of tags earlier versions read and add to (without an expiry). For one release a
beat also adds its tag there and keeps the set alive for its horizon, and :meth:`Registry.has_tag`
falls back to it, so old and new replicas accept each other's orphaned feedback during a
rolling upgrade; a tag past its deadline leaves it too, and once no replica writes it the set
expires."""


def default_keep_tags_s() -> float:
    """How long a silent replica's tag is kept under the default reward window."""
    return feedback_horizon_s(RewardSettings.window_s)


_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if #gone > 0 then
  redis.call('ZREM', KEYS[1], unpack(gone))
  redis.call('HDEL', KEYS[2], unpack(gone))
end
redis.call('ZADD', KEYS[4], 'GT', now + tonumber(ARGV[6]), ARGV[5])
local before = string.format('(%d', now)
local past = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', before, 'LIMIT', 0, 1000)
if #past > 0 then
  redis.call('ZREM', KEYS[4], unpack(past))
  redis.call('SREM', KEYS[5], unpack(past))
end
local last = redis.call('ZRANGE', KEYS[4], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[4], math.floor(tonumber(last[2])))
redis.call('SADD', KEYS[5], ARGV[5])
if redis.call('PTTL', KEYS[5]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
return {redis.call('ZCARD', KEYS[1]), epoch}
"""

_HAS_TAG = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if deadline then
  return tonumber(deadline) >= now and 1 or 0
end
return redis.call('SISMEMBER', KEYS[2], ARGV[1])
"""

_LEAVE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Registry:
    """This replica's heartbeat, and the alive replicas as last seen.

    :meth:`beat` is called by the replica's background thread; :attr:`alive` never touches
    the network (the count of the last successful beat, at least 1: this replica)."""

    def __init__(
        self,
        link: ClusterLink,
        address: str,
        *,
        keep_tags_s: Callable[[], float] = default_keep_tags_s,
    ) -> None:
        self._link = link
        self.address = address
        self._keys = [link.key("replicas"), link.key("replica-addresses"), link.key("epoch")]
        self._tags_key = link.key(TAGS_KEY)
        self._legacy_tags_key = link.key(LEGACY_TAGS_KEY)
        self._keep_tags_s = keep_tags_s
        self._beat = link.script(_BEAT)
        self._leave = link.script(_LEAVE)
        self._has_tag = link.script(_HAS_TAG)
        self._lock = threading.Lock()
        self._alive = 1
        self.epoch = ""
        self._epoch_listeners: list[Callable[[], None]] = []
        self._ttl_ms = int(MISSED_BEATS * link.settings.heartbeat_s * 1000)

    @property
    def alive(self) -> int:
        """Replicas alive at the last successful heartbeat (1 before the first)."""
        return self._alive

    def beat(self) -> int:
        """Say this replica is alive; returns the replicas alive (the last known count when
        the server cannot be reached)."""
        rid = self._link.replica_id
        keep_ms = max(self._ttl_ms, int(self._keep_tags_s() * 1000))
        args = [rid, self.address, self._ttl_ms, secrets.token_hex(8), replica_tag(rid), keep_ms]
        keys = [*self._keys, self._tags_key, self._legacy_tags_key]
        reply = self._link.try_call(lambda client: self._beat(keys=keys, args=args))
        if reply is None:
            return self._alive
        count, epoch = int(reply[0]), _text(reply[1])
        with self._lock:
            self._alive = max(1, count)
            renewed = bool(self.epoch) and epoch != self.epoch
            self.epoch = epoch
        if renewed:
            log.warning("cluster_server_renewed", replica=rid)
            for listener in self._epoch_listeners:
                listener()
        return self._alive

    def on_renewed(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when a heartbeat finds the server has lost what it held (a
        restart without persistence, or another server): shared figures must be written
        again."""
        self._epoch_listeners.append(listener)

    def leave(self) -> None:
        """Take this replica out of the registry (a clean shutdown), if the server answers."""
        rid = self._link.replica_id
        self._link.try_call(lambda client: self._leave(keys=self._keys, args=[rid]))

    def members(self) -> dict[str, str]:
        """Alive replica ids and their addresses (empty when the server cannot be reached)."""
        found = self._link.try_call(lambda client: client.hgetall(self._keys[1]))
        if not found:
            return {}
        return {_text(rid): _text(address) for rid, address in found.items()}

    def has_tag(self, tag: str) -> bool | None:
        """Whether feedback for a decision of the replica with decision-id tag ``tag`` may
        still arrive: its deadline (set by its beats) has not passed, or, for a replica of an
        earlier version, the tag is in the legacy set (None when the server cannot be
        reached). Feedback for a gone replica's decision is accepted only for such a tag."""
        keys = [self._tags_key, self._legacy_tags_key]
        found = self._link.try_call(lambda client: self._has_tag(keys=keys, args=[tag]))
        return None if found is None else bool(found)

    def address_of(self, replica_id: str) -> str | None:
        """The gRPC address of an alive replica (None if unknown, gone, or the server cannot
        be reached)."""
        found = self._link.try_call(lambda client: client.hget(self._keys[1], replica_id))
        return None if found is None else _text(found)


__all__ = ["LEGACY_TAGS_KEY", "MISSED_BEATS", "TAGS_KEY", "Registry", "default_keep_tags_s"]
