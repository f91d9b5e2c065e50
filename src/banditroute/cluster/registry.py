"""Which replicas are alive, and where they listen: a registry kept by heartbeats.

Each replica beats every ``cluster.heartbeat_s``: one script stamps it with the server's
clock (so replicas' clocks may disagree) in a sorted set, records its address in a hash, drops
replicas silent for three beats, and returns how many remain. Limits divided between replicas
when the server is gone use the last count known; feedback for a decision another replica made
is forwarded to the address :meth:`Registry.address_of` gives. The beat also reads the
server's *epoch*, a random token the first replica writes: a new epoch means the server lost
its data, and every replica writes its shared figures again (:meth:`Registry.on_renewed`).
The beat also adds the replica's decision-id tag to the set of tags the cluster has known
(:meth:`Registry.has_tag`).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

import structlog

from banditroute.cluster import replica_tag
from banditroute.cluster.connection import ClusterLink

log = structlog.get_logger(__name__)

MISSED_BEATS = 3
"""A replica silent for this many heartbeats counts as gone."""

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
redis.call('SADD', KEYS[4], ARGV[5])
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

    def __init__(self, link: ClusterLink, address: str) -> None:
        self._link = link
        self.address = address
        self._keys = [link.key("replicas"), link.key("replica-addresses"), link.key("epoch")]
        self._tags_key = link.key("replica-tags")
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
        args = [rid, self.address, self._ttl_ms, secrets.token_hex(8), replica_tag(rid)]
        keys = [*self._keys, self._tags_key]
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
        """Whether a replica with decision-id tag ``tag`` has ever beaten here (None when the
        server cannot be reached): feedback for a gone replica's decision is accepted only
        for a tag the cluster has known."""
        found = self._link.try_call(lambda client: client.sismember(self._tags_key, tag))
        return None if found is None else bool(found)

    def address_of(self, replica_id: str) -> str | None:
        """The gRPC address of an alive replica (None if unknown, gone, or the server cannot
        be reached)."""
        found = self._link.try_call(lambda client: client.hget(self._keys[1], replica_id))
        return None if found is None else _text(found)


__all__ = ["MISSED_BEATS", "Registry"]
