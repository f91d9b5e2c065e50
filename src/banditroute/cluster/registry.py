"""Which replicas are alive, and where they listen: a registry kept by heartbeats.

Each replica beats every ``cluster.heartbeat_s``: one script stamps it with the server's
clock (so replicas' clocks may disagree) in a sorted set, records its address in a hash, drops
replicas silent for three beats, and returns how many remain. Limits divided between replicas
when the server is gone use the last count known; feedback for a decision another replica made
is forwarded to the address :meth:`Registry.address_of` gives. The beat also reads the
server's *epoch*, a random token the first replica writes: a new epoch means the server lost
its data, and every replica writes its shared figures again (:meth:`Registry.on_renewed`).
The beat also stamps the replica's decision-id tag in the tags the cluster has known
(:meth:`Registry.has_tag`), and drops the tags of replicas silent for longer than feedback for
their decisions may still arrive (the reward window and a slack): so that key stays as large as
the replicas of the last reward window, however many come and go.
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
LEGACY_TAGS_KEY = "replica-tags"
"""The set of tags earlier versions kept for ever; a beat gives it an expiry (it goes once no
replica of those versions writes it)."""


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
redis.call('ZADD', KEYS[4], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[4], ARGV[6])
if redis.call('PTTL', KEYS[5]) == -1 then
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[4]
  redis.call('SET', KEYS[3], epoch)
end
return {redis.call('ZCARD', KEYS[1]), epoch}
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
        self._tags_key = link.key("replica-tag-seen")
        self._legacy_tags_key = link.key(LEGACY_TAGS_KEY)
        self._keep_tags_s = keep_tags_s
        self._beat = link.script(_BEAT)
        self._leave = link.script(_LEAVE)
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
        """Whether a replica with decision-id tag ``tag`` has beaten here within the time its
        decisions' feedback may still arrive (None when the server cannot be reached):
        feedback for a gone replica's decision is accepted only for a tag the cluster knows."""
        return self._link.try_call(lambda client: client.zscore(self._tags_key, tag) is not None)

    def address_of(self, replica_id: str) -> str | None:
        """The gRPC address of an alive replica (None if unknown, gone, or the server cannot
        be reached)."""
        found = self._link.try_call(lambda client: client.hget(self._keys[1], replica_id))
        return None if found is None else _text(found)


__all__ = ["MISSED_BEATS", "Registry", "default_keep_tags_s"]
