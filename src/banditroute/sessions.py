"""Sticky sessions: Routes with the same ``session_id`` stay on one model.

A conversation that changes model at every turn loses the provider's prompt cache and its
tone. A session (keyed by tenant and a keyed hash of its id, so one tenant cannot reach
another's session and no client text is kept) remembers the model its last decision chose;
the next Route of the session is given that model again, unless it is no longer eligible for
that request (excluded by the client, a constraint, the data class, the tenant's allow-list,
an open breaker or full limits), or the session's last reported outcome with it was a failure.
Then the policy chooses afresh and the session moves to the new model.

Propensity: a sticky decision is forced by the session, not drawn by the policy, so its
logged probability is 1 (a one-hot distribution over the eligible models) and the decision
row's ``constraints`` say ``session_sticky = true``. Replay's estimators leave those rows
out (they say nothing about what another model would have done); the decisions that start or
move a session are drawn from the policy with their true probability and are evaluated like
any other. Logging the first decision's probability on the later ones instead would make a
forced pick look like an exploratory draw and inflate importance weights.

The table is bounded: sessions idle for ``ttl_s`` expire, and past ``max_sessions`` the
least recently used one is forgotten (its next Route starts a new session).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

SessionKey = tuple[str, str]
"""(tenant name, keyed hash of the session id)."""


@dataclass(frozen=True)
class SessionSettings:
    """``[sessions]``: how long an idle session lasts and how many are kept."""

    ttl_s: float = 1800.0
    max_sessions: int = 100_000


class Sessions(Protocol):
    """What the router asks of its sessions: a :class:`SessionTable`, or a cluster
    replica's table shared with the others
    (:class:`~banditroute.cluster.shared_sessions.SharedSessions`)."""

    def __len__(self) -> int: ...

    def live(self, now: float, settings: SessionSettings) -> int: ...

    def model(self, key: SessionKey, now: float, settings: SessionSettings) -> str | None: ...

    def assign(
        self, key: SessionKey, model: str, now: float, settings: SessionSettings
    ) -> None: ...

    def outcome(self, key: SessionKey, model: str, ok: bool) -> None: ...


@dataclass
class _Session:
    model: str
    last_used: float
    failed: bool = False


class SessionTable:
    """The model each live session is on, least recently used first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: OrderedDict[SessionKey, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self, now: float, settings: SessionSettings) -> None:
        """Forget expired sessions (the oldest first: the table is in order of last use)."""
        cutoff = now - settings.ttl_s
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.last_used > cutoff:
                break
            del self._sessions[key]

    def live(self, now: float, settings: SessionSettings) -> int:
        """How many sessions are live (not expired) at ``now``."""
        with self._lock:
            self._prune(now, settings)
            return len(self._sessions)

    def model(self, key: SessionKey, now: float, settings: SessionSettings) -> str | None:
        """The model session ``key`` stays on, or None (no such live session, or its last
        outcome with its model was a failure)."""
        with self._lock:
            self._prune(now, settings)
            session = self._sessions.get(key)
            if session is None or session.failed:
                return None
            return session.model

    def assign(self, key: SessionKey, model: str, now: float, settings: SessionSettings) -> None:
        """Session ``key``'s latest decision chose ``model``: it stays there from now on."""
        with self._lock:
            self._sessions[key] = _Session(model, now)
            self._sessions.move_to_end(key)
            while len(self._sessions) > settings.max_sessions:
                self._sessions.popitem(last=False)

    def outcome(self, key: SessionKey, model: str, ok: bool) -> None:
        """A feedback reported how ``model`` did in session ``key``: a failure with the
        session's model makes its next Route choose afresh; a success restores it."""
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.model == model:
                session.failed = not ok


def sticky_distribution(
    values: list[float], order: list[int], chosen: int
) -> tuple[list[float], list[int]]:
    """The logged distribution of a decision the session forced onto arm ``chosen``: 1 for
    it, 0 for the others; and the ranking order with it first, the others in the policy's
    ``order`` (they are the fallbacks)."""
    forced = [0.0] * len(values)
    forced[chosen] = 1.0
    return forced, [chosen, *(i for i in order if i != chosen)]
