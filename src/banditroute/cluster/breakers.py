"""Breakers and model outcomes shared between replicas.

A breaker that opens on one replica (its feedback showed the model failing) is written to the
hash ``PREFIX:breakers`` as ``UNTIL_MS|ID|REPLICA|CAUSE`` (the server's clock plus the
cooldown); every replica polls the hash every :data:`POLL_S` and opens its own breaker for the
time left, so the model is out everywhere within a fraction of a second (the admission script
checks the hash as well). An operator's ResetModelHealth writes ``0|ID|REPLICA|reset`` and
every replica closes its breaker. The outcomes each replica is told of go to the stream
``PREFIX:outcomes`` and every replica adds the others' to its statistics, so error rates and
latency estimates judge a model on all of the cluster's feedback (as ``--workers`` processes
exchange them in merge rounds). No network call runs on a Route or Feedback thread: the
poller publishes what they queued.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable
from typing import Any

import structlog

from banditroute.cluster.connection import ClusterLink, Degraded
from banditroute.health import HealthTracker, SharedOutcome

log = structlog.get_logger(__name__)

POLL_S = 0.2
"""How often a replica reads the shared breakers and outcomes."""
STREAM_MAXLEN = 100_000
"""Outcomes the stream keeps (approximately): minutes of traffic, enough for a poll every
fraction of a second."""
READ_COUNT = 10_000
"""Outcomes read per poll at most."""

_OPEN = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local until_ms = 0
if tonumber(ARGV[2]) > 0 then until_ms = now_ms + tonumber(ARGV[2]) end
redis.call('HSET', KEYS[1], ARGV[1], until_ms .. '|' .. ARGV[3])
return until_ms
"""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SharedBreakers:
    """Publishes this replica's breaker openings, resets and outcomes, and applies the
    others' (see the module docstring)."""

    def __init__(self, link: ClusterLink, health: HealthTracker) -> None:
        self._link = link
        self._health = health
        self._me = link.replica_id
        self._key = link.key("breakers")
        self._stream = link.key("outcomes")
        self._publish = link.script(_OPEN)
        self._lock = threading.Lock()
        self._queued: list[tuple[str, float, str]] = []  # (model, cooldown ms or 0, cause)
        self._seen: dict[str, str] = {}
        self._last_id: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        health.share_outcomes()
        health.on_open(self._opened)
        health.on_reset(self._reset)

    def _opened(self, model: str, cause: str) -> None:
        cooldown_ms = self._health.settings.cooldown_s * 1000.0
        with self._lock:
            self._queued.append((model, cooldown_ms, cause))

    def _reset(self, model: str) -> None:
        with self._lock:
            self._queued.append((model, 0.0, "reset"))

    def start(self) -> None:
        """Start polling."""
        self._thread = threading.Thread(target=self._run, name="cluster-breakers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (after one last publication)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:
                log.exception("cluster_breakers_failed")

    def poll(self) -> None:
        """Publish what was queued, then apply the others' breakers and outcomes."""
        with self._lock:
            queued, self._queued = self._queued, []
        try:
            for model, cooldown_ms, cause in queued:
                value = f"{secrets.token_hex(4)}|{self._me}|{cause[:200]}"
                self._link.call(self._publisher([model, int(cooldown_ms), value]))
            # While degraded the outcomes wait in the tracker's outbox (bounded) for the server.
            outcomes = [] if self._link.degraded else self._health.take_outcomes()
            if outcomes:
                self._link.call(lambda client: self._add(client, outcomes))
            now_ms, entries = self._link.call(self._read_breakers)
            self._apply_breakers(now_ms, entries)
            self._link.call(self._read_outcomes)
        except Degraded:
            with self._lock:  # published on the next poll that reaches the server
                self._queued[:0] = queued
            return

    def _publisher(self, args: list[Any]) -> Callable[[Any], Any]:
        return lambda client: self._publish(keys=[self._key], args=args)

    def _read_breakers(self, client: Any) -> tuple[int, dict[Any, Any]]:
        pipe = client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(self._key)
        (seconds, micros), entries = pipe.execute()
        return int(seconds) * 1000 + int(micros) // 1000, entries

    def _apply_breakers(self, now_ms: int, entries: dict[Any, Any]) -> None:
        for raw_model, raw_value in entries.items():
            model, value = _text(raw_model), _text(raw_value)
            if self._seen.get(model) == value:
                continue
            self._seen[model] = value
            parts = value.split("|", 3)
            if len(parts) != 4 or parts[2] == self._me or not parts[0].isdigit():
                continue
            until_ms, replica, cause = int(parts[0]), parts[2], parts[3]
            if until_ms == 0:
                self._health.reset(model, announce=False)
                log.info("breaker_reset_relayed", model=model, replica=replica)
            elif until_ms > now_ms:
                retry_in = (until_ms - now_ms) / 1000.0
                why = f"{cause} (on replica {replica})"
                if self._health.force_open(model, retry_in, why):
                    log.info("breaker_opened_relayed", model=model, replica=replica,
                             retry_in_s=math.ceil(retry_in))  # fmt: skip

    def _add(self, client: Any, outcomes: list[SharedOutcome]) -> None:
        pipe = client.pipeline(transaction=False)
        for model, status, latency_ms, tenant in outcomes:
            fields = {"r": self._me, "m": model, "s": status, "t": tenant}
            if latency_ms is not None:
                fields["l"] = repr(latency_ms)
            pipe.xadd(self._stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()

    def _read_outcomes(self, client: Any) -> None:
        if self._last_id is None:  # start from now: older outcomes are history
            last = client.xrevrange(self._stream, count=1)
            self._last_id = _text(last[0][0]) if last else "0-0"
            return
        found = client.xread({self._stream: self._last_id}, count=READ_COUNT)
        if not found:
            return
        entries = found[0][1]
        self._last_id = _text(entries[-1][0])
        others: list[SharedOutcome] = []
        for _, raw in entries:
            fields = {_text(k): _text(v) for k, v in raw.items()}
            if fields.get("r") == self._me:
                continue
            latency = fields.get("l")
            others.append((
                fields.get("m", ""), fields.get("s", ""),
                None if latency is None else float(latency), fields.get("t", ""),
            ))  # fmt: skip
        if others:
            self._health.add_outcomes(others)


__all__ = ["POLL_S", "SharedBreakers"]
