"""Everything the health tracker keeps about one model (:class:`ModelState`: outcome counts,
failure window, latency quantiles, breaker, load limits and window, each tenant's outcomes)
and the snapshot made of it (:class:`ModelHealth`). The tracker's lock guards it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from river import stats as river_stats

from banditroute.breaker import CLOSED, Breaker, BreakerState
from banditroute.health_settings import HealthSettings
from banditroute.health_tenants import FailureWindow, TenantOutcomes
from banditroute.load_limits import ModelLimits, RateWindow, limit_reason
from banditroute.outcomes import OutcomeStatus

FAILURE_STATUSES = frozenset(
    {OutcomeStatus.ERROR, OutcomeStatus.TIMEOUT, OutcomeStatus.RATE_LIMITED}
)
"""Outcomes that count against a model (OK and REFUSED are served answers)."""

_COUNTER = {
    OutcomeStatus.OK: "ok",
    OutcomeStatus.ERROR: "errors",
    OutcomeStatus.TIMEOUT: "timeouts",
    OutcomeStatus.RATE_LIMITED: "rate_limited",
    OutcomeStatus.REFUSED: "refused",
}


@dataclass(frozen=True)
class ModelHealth:
    """A snapshot of one model's health, for Route's reasons, logs and an admin view.

    ``requests`` counts reported outcomes of every status (``ok + errors + timeouts +
    rate_limited + refused``); ``admitted`` counts routes admitted, whether or not feedback
    came. ``recent`` outcomes (at most ``window``) give ``error_rate``; latencies are
    milliseconds over the ``latency_count`` most recent served answers that reported one (None
    before the first). ``requests_last_minute`` and
    ``tokens_last_minute`` count admitted routes. ``opened_at`` is the tracker clock's reading
    when the breaker last opened (None when closed); ``retry_in_s`` is the time left before it
    turns half-open (0 when half-open, None when closed). ``reason`` is what
    :meth:`HealthTracker.unavailable_reason` says now, None if the model may be chosen.
    """

    model: str
    state: BreakerState
    requests: int
    ok: int
    errors: int
    timeouts: int
    rate_limited: int
    refused: int
    recent: int
    error_rate: float
    consecutive_failures: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_count: int
    admitted: int
    requests_last_minute: int
    tokens_last_minute: int
    in_flight: int
    opened_at: float | None
    retry_in_s: float | None
    reason: str | None

    @property
    def available(self) -> bool:
        """True when the model may be chosen now."""
        return self.reason is None


def check_outcome(status: OutcomeStatus, latency_ms: float | None) -> None:
    """ValueError for an unknown status or a negative or non-finite latency."""
    if status not in _COUNTER:
        raise ValueError(f"status: unknown outcome status {status!r}")
    if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms >= 0.0):
        raise ValueError(f"latency_ms: must be a finite number >= 0, got {latency_ms!r}")


class ModelState:
    """Everything the tracker keeps about one model (guarded by the tracker's lock)."""

    __slots__ = (
        "admitted", "breaker", "errors", "failures", "in_flight", "latency_p50", "latency_p95",
        "latency_samples", "limits", "model", "ok", "rate", "rate_limited", "refused",
        "tenants", "timeouts",
    )  # fmt: skip

    def __init__(self, model: str, limits: ModelLimits | None, latency_window: int) -> None:
        self.model = model
        self.limits = limits  # None when unlimited, so the hot path can skip the clock
        self.ok = self.errors = self.timeouts = self.rate_limited = self.refused = 0
        self.admitted = 0
        self.failures = FailureWindow()
        self.latency_p50 = river_stats.RollingQuantile(0.5, window_size=latency_window)
        self.latency_p95 = river_stats.RollingQuantile(0.95, window_size=latency_window)
        self.latency_samples = 0  # latencies the quantiles' window holds (at most its size)
        self.breaker = Breaker()
        self.in_flight = 0
        self.rate = RateWindow()
        self.tenants: dict[str, TenantOutcomes] = {}

    @property
    def outcomes(self) -> int:
        """Outcomes recorded in all (served answers and failures)."""
        return self.ok + self.errors + self.timeouts + self.rate_limited + self.refused

    @property
    def unhindered(self) -> bool:
        """True when neither a breaker nor a limit can keep the model out (the common case:
        no clock read, no window to prune)."""
        return self.breaker.state == CLOSED and self.limits is None

    def count(
        self, status: OutcomeStatus, latency_ms: float | None, tenant: str, settings: HealthSettings
    ) -> bool:
        """Count one outcome (:func:`check_outcome` passed) as ``tenant`` reported it: the
        tenant's own outcomes, the status's counter, the failure window, a served answer's
        latency; True if it failed."""
        counter = _COUNTER[status]
        failed = status in FAILURE_STATUSES
        own = self.tenants.get(tenant)
        if own is None:
            own = self.tenants[tenant] = TenantOutcomes(settings.latency_window)
        own.record(failed, latency_ms, settings.window)
        setattr(self, counter, getattr(self, counter) + 1)
        self.failures.record(failed, settings.window)
        if not failed and latency_ms is not None:
            self.latency_p50.update(latency_ms)
            self.latency_p95.update(latency_ms)
            self.latency_samples = min(self.latency_samples + 1, settings.latency_window)
        return failed

    def close(self) -> None:
        """Close the breaker and start the rate rule afresh: the failures that opened it are
        old news."""
        self.breaker.close()
        self.failures.clear()
        for outcomes in self.tenants.values():
            outcomes.failures.clear()

    def reason(self, now: float, tokens: int, settings: HealthSettings) -> str | None:
        """Why a route of ``tokens`` may not go to the model now (its breaker, then its load
        limits), or None."""
        why = self.breaker.reason(now, settings)
        if why is not None or self.limits is None:
            return why
        return limit_reason(self.limits, self.in_flight, self.rate, now, tokens)

    def admit(self, now: float, tokens: int, settings: HealthSettings) -> None:
        """Account one admitted route: in the window, in flight, and as a half-open probe."""
        self.admitted += 1
        self.in_flight += 1
        rate = self.rate
        rate.prune(now)
        rate.add(now, tokens)
        self.breaker.probe(now, settings)

    def snapshot(self, now: float, settings: HealthSettings) -> ModelHealth:
        """The model's health now."""
        reason = self.reason(now, 0, settings)  # refreshes the breaker, prunes the window
        recent = len(self.failures.recent)
        breaker = self.breaker
        retry_in = breaker.retry_in(now, settings)
        self.rate.prune(now)
        return ModelHealth(
            model=self.model, state=breaker.state, requests=self.outcomes, ok=self.ok,
            errors=self.errors, timeouts=self.timeouts, rate_limited=self.rate_limited,
            refused=self.refused, recent=recent,
            error_rate=self.failures.recent_failures / recent if recent else 0.0,
            consecutive_failures=self.failures.consecutive,
            latency_p50_ms=self.latency_p50.get(), latency_p95_ms=self.latency_p95.get(),
            latency_count=self.latency_samples, admitted=self.admitted,
            requests_last_minute=self.rate.requests, tokens_last_minute=self.rate.tokens,
            in_flight=self.in_flight, opened_at=breaker.opened_at, retry_in_s=retry_in,
            reason=reason,
        )  # fmt: skip


__all__ = ["FAILURE_STATUSES", "ModelHealth", "ModelState", "check_outcome"]
