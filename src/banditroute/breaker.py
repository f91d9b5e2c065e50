"""One model's circuit breaker: its state, why and when it opened, and its half-open probes.

::

    closed --(the tracker finds the model failing)--> open
    open --(cooldown_s elapsed)--> half_open            (checked lazily against the clock)
    half_open: at most half_open_probes routes are admitted; then
        a served outcome (OK or REFUSED) --> closed
        a failure (ERROR, TIMEOUT, RATE_LIMITED) --> open, with a fresh cooldown

A probe whose outcome never arrives would keep the breaker half-open and closed to traffic
forever, so when all probe slots are taken and ``cooldown_s`` passes without a deciding
outcome, the slots are re-armed. What counts as failing, and the lock, are the tracker's
(:mod:`banditroute.health`).
"""

from __future__ import annotations

import math
from typing import Literal

from banditroute.health_settings import HealthSettings

BreakerState = Literal["closed", "open", "half_open"]
"""Where a model's circuit breaker stands."""

CLOSED: BreakerState = "closed"
OPEN: BreakerState = "open"
HALF_OPEN: BreakerState = "half_open"


class Breaker:
    """A circuit breaker's state; time-driven transitions happen when it is looked at."""

    __slots__ = ("last_probe_at", "open_cause", "opened_at", "probes", "state")

    def __init__(self) -> None:
        self.state: BreakerState = CLOSED
        self.opened_at: float | None = None
        self.open_cause = ""
        self.probes = 0
        self.last_probe_at: float | None = None

    def refresh(self, now: float, settings: HealthSettings) -> None:
        """Apply the time-driven transitions: open -> half_open, re-arming lost probes."""
        cooldown = settings.cooldown_s
        if self.state == OPEN:
            if self.opened_at is not None and now >= self.opened_at + cooldown:
                self.state = HALF_OPEN
                self.probes = 0
                self.last_probe_at = None
        elif (
            self.state == HALF_OPEN
            and self.probes >= settings.half_open_probes
            and self.last_probe_at is not None
            and now >= self.last_probe_at + cooldown
        ):
            self.probes = 0

    def open(self, now: float, cause: str) -> None:
        """Open now, because of ``cause``."""
        self.state = OPEN
        self.opened_at = now
        self.open_cause = cause
        self.probes = 0
        self.last_probe_at = None

    def close(self) -> None:
        """Close (a served probe, or an operator's reset)."""
        self.state = CLOSED
        self.opened_at = None
        self.open_cause = ""
        self.probes = 0
        self.last_probe_at = None

    def force_open(
        self, now: float, retry_in_s: float, cause: str, settings: HealthSettings
    ) -> bool:
        """Open for ``retry_in_s`` more seconds (another replica opened it); True if that
        changed anything: a breaker already open for at least as long is left alone."""
        self.refresh(now, settings)
        cooldown = settings.cooldown_s
        opened_at = self.opened_at
        if (
            self.state == OPEN
            and opened_at is not None
            and opened_at + cooldown >= now + retry_in_s
        ):
            return False
        self.open(now + retry_in_s - cooldown, cause)
        return True

    def reason(self, now: float, settings: HealthSettings) -> str | None:
        """Why the breaker keeps the model out now (open, or half-open with every probe slot
        taken), or None."""
        self.refresh(now, settings)
        if self.state == OPEN:
            assert self.opened_at is not None
            retry = max(0.0, self.opened_at + settings.cooldown_s - now)
            return f"circuit open after {self.open_cause}; retry in {math.ceil(retry)}s"
        if self.state == HALF_OPEN and self.probes >= settings.half_open_probes:
            return (
                f"circuit half-open: {self.probes} probe route(s) admitted, waiting for an outcome"
            )
        return None

    def retry_in(self, now: float, settings: HealthSettings) -> float | None:
        """Seconds before an open breaker turns half-open (0 when half-open, None when
        closed), as of its last refresh."""
        if self.state == OPEN:
            assert self.opened_at is not None
            return max(0.0, self.opened_at + settings.cooldown_s - now)
        return 0.0 if self.state == HALF_OPEN else None

    def probe(self, now: float, settings: HealthSettings) -> None:
        """A route was admitted: while half-open it takes a probe slot."""
        if self.state != CLOSED:
            self.refresh(now, settings)
            if self.state == HALF_OPEN:
                self.probes += 1
                self.last_probe_at = now


__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Breaker", "BreakerState"]
