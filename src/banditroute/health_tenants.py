"""Failure windows, and one model's outcomes as each tenant reported them, so that no tenant
alone can sway a model's shared health.

A model's circuit breaker and its latency estimate serve every tenant, but feedback is
whatever a tenant says. :class:`FailureWindow` is the breaker's evidence (recent outcomes and
the current failure run); :class:`TenantOutcomes` keeps one for each tenant, with a rolling
latency median. The tracker (:mod:`banditroute.health`) then opens a breaker only when enough
tenants are failing on their own outcomes, and Route's expected latency is the lower median of
the tenants' own medians, so one tenant reporting false errors or absurd latencies moves
neither for the others.
"""

from __future__ import annotations

from collections import deque

from river import stats as river_stats


class FailureWindow:
    """The last ``window`` outcomes (failed or not) and the current run of failures."""

    __slots__ = ("consecutive", "recent", "recent_failures")

    def __init__(self) -> None:
        self.recent: deque[bool] = deque()  # True = failure
        self.recent_failures = 0
        self.consecutive = 0

    def record(self, failed: bool, window: int) -> None:
        """Add one outcome, dropping the oldest past ``window``."""
        recent = self.recent
        if len(recent) >= window and recent.popleft():
            self.recent_failures -= 1
        recent.append(failed)
        if failed:
            self.recent_failures += 1
            self.consecutive += 1
        else:
            self.consecutive = 0

    def clear(self) -> None:
        """Forget every outcome (the breaker closed: they are old news)."""
        self.recent.clear()
        self.recent_failures = 0
        self.consecutive = 0

    def cause(self, consecutive_failures: int, min_samples: int, threshold: float) -> str | None:
        """Why these outcomes meet the breaker's rule (a run of ``consecutive_failures``, or a
        failure share >= ``threshold`` over at least ``min_samples`` outcomes), or None."""
        if self.consecutive >= consecutive_failures:
            return f"{self.consecutive} consecutive failures"
        recent = len(self.recent)
        if recent >= min_samples and self.recent_failures >= threshold * recent:
            share = 100.0 * self.recent_failures / recent
            return (
                f"a {share:.0f}% error rate over the last {recent} outcomes "
                f"(threshold {100.0 * threshold:.0f}%)"
            )
        return None

    def failing(self, consecutive_failures: int, min_samples: int, threshold: float) -> bool:
        """True when these outcomes meet the breaker's rule (see :meth:`cause`)."""
        return self.cause(consecutive_failures, min_samples, threshold) is not None


class TenantOutcomes:
    """One tenant's recent outcomes of one model: its failure window and latency median."""

    __slots__ = ("failures", "latency_p50", "served")

    def __init__(self, latency_window: int) -> None:
        self.failures = FailureWindow()
        self.served = 0  # served answers with a latency, ever
        self.latency_p50 = river_stats.RollingQuantile(0.5, window_size=latency_window)

    def record(self, failed: bool, latency_ms: float | None, window: int) -> None:
        """Add one outcome (``latency_ms`` counts only for a served answer)."""
        self.failures.record(failed, window)
        if not failed and latency_ms is not None:
            self.latency_p50.update(latency_ms)
            self.served += 1

    def median(self) -> float:
        """The rolling median latency (call once ``served`` > 0)."""
        value = self.latency_p50.get()
        return 0.0 if value is None else float(value)


def lower_median(values: list[float]) -> float | None:
    """The lower median of ``values`` (None when empty): with two tenants the smaller value,
    so neither can raise it alone; with three or more a value some other tenant vouches for."""
    if not values:
        return None
    values.sort()
    return values[(len(values) - 1) // 2]


__all__ = ["FailureWindow", "TenantOutcomes", "lower_median"]
