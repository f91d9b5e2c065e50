"""The trainer's leader lock: one key set with NX and an expiry, renewed while the leader lives.

The holder's token (random per process) is the key's value. Renewing and releasing are
scripts that act only if the value is still the holder's, so a trainer whose lock expired
(paused longer than the expiry, or Valkey restarted empty) can neither extend nor delete the
new leader's lock: its renewal fails, and it steps down. A standby tries to take the lock
every so often and becomes the leader once the old one's expired.
"""

from __future__ import annotations

import secrets
from typing import Any

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLock:
    """A lock on ``key`` that expires ``ttl_ms`` after its last renewal."""

    def __init__(self, client: Any, key: str, ttl_ms: int) -> None:
        self._client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = secrets.token_hex(16)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; True if this process holds it now."""
        if self._client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return bool(self.renew())

    def renew(self) -> bool:
        """Extend the lock if this process still holds it; False if it lost it."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lock up at once (if still held), so a standby need not wait for expiry."""
        self._release(keys=[self.key], args=[self.token])


__all__ = ["LeaderLock"]
