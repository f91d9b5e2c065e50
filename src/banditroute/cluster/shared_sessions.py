"""Sticky sessions shared by the replicas: a session's model lives in Valkey.

Behind a load balancer a session's Routes reach different replicas, and a table in each
replica's memory (:class:`~banditroute.sessions.SessionTable`) would let every replica draw
the session its own model. :class:`SharedSessions` keeps the binding under
``PREFIX:session:DIGEST`` (a 32-hex-digit digest of the tenant and the session's hash: bounded
keys, no client text), with the local table's semantics:

- a Route of a session reads it with ``GETEX ... PX ttl`` (one command: the read renews the
  idle expiry, as a local Route does) and writes it only when the session starts or moves;
- a failed outcome reported for the session's model marks it (``!MODEL``) so that the next
  Route on any replica draws afresh; a success restores it. Feedback is handled under the
  router's lock, so this write is queued and sent by the heartbeat (this replica applies it
  at once);
- the session's hash is keyed with a secret the replicas share through Valkey (the first
  replica creates it; one that finds it lost puts its own back), so every replica computes
  the same hash for the same id and the log still holds no guessable digest;
- while Valkey is unreachable (the link is degraded), the local table decides, as a lone
  server's does; it is kept up to date all along, so a replica keeps its own sessions.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from banditroute.cluster.connection import ClusterLink, Degraded
from banditroute.sessions import SessionKey, Sessions, SessionSettings

SECRET_BYTES = 32
FAILED = "!"
"""The prefix of a stored model whose last outcome in the session was a failure."""
MAX_QUEUED = 10_000
"""Outcomes waiting for the heartbeat, at most (past it the oldest are dropped)."""

_SECRET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""

_OUTCOME = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] or held == '!' .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return 0
"""


class SharedSessions:
    """A session table shared through Valkey, falling back to ``local`` (module doc)."""

    def __init__(
        self, link: ClusterLink, local: Sessions, fallback_hash: Callable[[str], str]
    ) -> None:
        self._link = link
        self._local = local
        self._fallback_hash = fallback_hash
        self._secret: bytes | None = None
        self._secret_script = link.script(_SECRET)
        self._outcome_script = link.script(_OUTCOME)
        self._lock = threading.Lock()
        self._stored: OrderedDict[SessionKey, str | None] = OrderedDict()
        self._queued: OrderedDict[SessionKey, tuple[str, bool]] = OrderedDict()

    # -- the session's hash --------------------------------------------------------------
    def beat(self) -> None:
        """Take the cluster's session secret (or put this replica's back after Valkey lost
        it) and send the queued outcomes; run on the heartbeat thread."""
        mine = self._secret or secrets.token_bytes(SECRET_BYTES)
        key = self._link.key("session", "secret")
        found = self._link.try_call(lambda _c: self._secret_script(keys=[key], args=[mine]))
        if isinstance(found, bytes) and len(found) == SECRET_BYTES:
            self._secret = found
        self._send_outcomes()

    def session_hash(self, session_id: str) -> str:
        """The hash of ``session_id`` every replica computes alike (before the secret is
        known: the replica's own, so its sessions still work locally)."""
        secret = self._secret
        if secret is None:
            return self._fallback_hash(session_id)
        data = session_id.encode("utf-8", "surrogateescape")
        return hashlib.blake2b(data, key=secret, digest_size=16).hexdigest()

    def _key(self, key: SessionKey) -> str:
        tenant, hashed = key
        digest = hashlib.blake2b(f"{tenant}\0{hashed}".encode(), digest_size=16).hexdigest()
        return self._link.key("session", digest)

    # -- the SessionTable interface ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._local)

    def live(self, now: float, settings: SessionSettings) -> int:
        """Sessions this replica holds that are not expired (the shared ones expire in
        Valkey by themselves)."""
        return self._local.live(now, settings)

    def model(self, key: SessionKey, now: float, settings: SessionSettings) -> str | None:
        """The model the session stays on (Valkey's word, this replica's unsent outcome
        over it), or the local table's while Valkey is unreachable or has none."""
        ttl_ms = max(1, int(settings.ttl_s * 1000))
        name = self._key(key)
        try:
            raw = self._link.call(lambda client: client.getex(name, px=ttl_ms))
        except Degraded:
            return self._local.model(key, now, settings)
        stored = None if raw is None else bytes(raw).decode(errors="replace")
        with self._lock:
            self._remember(key, stored, settings)
            queued = self._queued.get(key)
        if stored is None:
            return self._local.model(key, now, settings)
        held = stored.removeprefix(FAILED)
        failed = stored.startswith(FAILED)
        if queued is not None and queued[0] == held:
            failed = not queued[1]
        return None if failed else held

    def assign(self, key: SessionKey, model: str, now: float, settings: SessionSettings) -> None:
        """The session's decision chose ``model``: locally always; in Valkey only when that
        is news (the session starts or moves; a sticky Route's read renewed it)."""
        self._local.assign(key, model, now, settings)
        with self._lock:
            # The new choice supersedes an outcome not sent yet: a failure of the model it
            # re-chose must not reach Valkey after it and end the session's stickiness there.
            self._queued.pop(key, None)
            if self._stored.get(key) == model:
                return
        name, ttl_ms = self._key(key), max(1, int(settings.ttl_s * 1000))
        try:
            self._link.call(lambda client: client.set(name, model, px=ttl_ms))
        except Degraded:
            return
        with self._lock:
            self._remember(key, model, settings)

    def outcome(self, key: SessionKey, model: str, ok: bool) -> None:
        """How ``model`` did in the session: locally at once, in Valkey at the next beat
        (called under the router's lock, which must not wait on the network)."""
        self._local.outcome(key, model, ok)
        with self._lock:
            self._queued[key] = (model, ok)
            self._queued.move_to_end(key)
            while len(self._queued) > MAX_QUEUED:
                self._queued.popitem(last=False)

    def _remember(self, key: SessionKey, stored: str | None, settings: SessionSettings) -> None:
        """What Valkey holds for ``key`` as last seen (bounded like the local table)."""
        self._stored[key] = stored
        self._stored.move_to_end(key)
        while len(self._stored) > settings.max_sessions:
            self._stored.popitem(last=False)

    def _outcome_sender(self, name: str, model: str, value: str) -> Callable[[Any], Any]:
        return lambda _client: self._outcome_script(keys=[name], args=[model, value])

    def _send_outcomes(self) -> None:
        with self._lock:
            queued, self._queued = self._queued, OrderedDict()
        for index, (key, (model, ok)) in enumerate(queued.items()):
            value = model if ok else FAILED + model
            try:
                self._link.call(self._outcome_sender(self._key(key), model, value))
            except Degraded:
                with self._lock:  # kept for the next beat (newer ones win)
                    for later_key, later in list(queued.items())[index:]:
                        self._queued.setdefault(later_key, later)
                return
            with self._lock:
                if key in self._stored:
                    self._stored[key] = value


__all__ = ["SharedSessions"]
