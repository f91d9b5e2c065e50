"""Per-tenant spend budgets: period accounting, a hard cap and online pacing.

Spend is what feedback reports (cost_usd, or tokens priced from the catalogue), counted in
UTC periods (hour, day or month). A hard cap refuses new routes once the period's spend
reaches it (RESOURCE_EXHAUSTED); a per-request target drives a :class:`BudgetPacer` whose
multiplier raises the cost weight in the tenant's rewards while spend runs over target, so
the mean cost per request converges to the target without refusing requests.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from banditroute.errors import ResourceExhausted
from banditroute.objectives import DEFAULT_PACING_RATE, BudgetPacer
from banditroute.tenancy import BudgetSettings

_CAP_TOLERANCE = 1e-9
"""Relative rounding slack of the hard cap comparison (far below any real request's cost)."""


def period_start(period: str, now: float) -> float:
    """Start (epoch seconds) of the UTC hour, day or month containing ``now``."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    if period == "hour":
        start = moment.replace(minute=0, second=0, microsecond=0)
    elif period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


@dataclass(frozen=True)
class BudgetStatus:
    """A tenant's spend in the current period."""

    tenant: str
    period: str
    period_start: float
    spend_usd: float
    requests: int
    limit_usd: float | None
    target_usd_per_request: float | None
    pacing_multiplier: float
    own_spend_usd: float = 0.0
    own_requests: int = 0
    """This process's own share of spend and requests (the rest came from the other serving
    processes, ``server.workers`` > 1): what a server-wide total adds up."""

    @property
    def mean_cost_usd(self) -> float:
        """Mean reported cost per request in the period."""
        return self.spend_usd / self.requests if self.requests else 0.0


class TenantBudget:
    """Spend accounting, hard cap and pacing for one tenant."""

    def __init__(self, tenant: str, settings: BudgetSettings, *, quality_weight: float = 1.0):
        self.tenant = tenant
        self.settings = settings
        self._lock = threading.Lock()
        self._start = float("-inf")
        self._spend = 0.0
        self._requests = 0
        self._local_spend = 0.0  # this process's share since the last take_local()
        self._local_requests = 0
        self._own_spend = 0.0  # this process's share in the period
        self._own_requests = 0
        self._quality_weight = quality_weight
        self.pacer = (
            BudgetPacer(settings.target_usd_per_request, DEFAULT_PACING_RATE, quality_weight)
            if settings.target_usd_per_request is not None
            else None
        )

    def reconfigure(self, settings: BudgetSettings) -> None:
        """Apply new budget settings (a configuration reload), keeping the period's spend and
        the pacer's multiplier; a changed period starts the new period's accounting."""
        with self._lock:
            target = settings.target_usd_per_request
            if target is None:
                self.pacer = None
            elif self.pacer is None:
                self.pacer = BudgetPacer(target, DEFAULT_PACING_RATE, self._quality_weight)
            else:
                self.pacer.budget_usd = target
            self.settings = settings

    def _roll(self, now: float) -> None:
        start = period_start(self.settings.period, now)
        if start != self._start:
            self._start, self._spend, self._requests = start, 0.0, 0
            self._local_spend, self._local_requests = 0.0, 0
            self._own_spend, self._own_requests = 0.0, 0

    def check(self, now: float) -> None:
        """ResourceExhausted if the hard cap for the current period is reached."""
        limit = self.settings.limit_usd
        if limit is None:
            return
        with self._lock:
            self._roll(now)
            # A running float sum falls short of the exact total (ten $0.10 costs add up to
            # 0.9999999999999999): a spend within rounding of the cap has reached it.
            if self._spend >= limit * (1.0 - _CAP_TOLERANCE):
                raise ResourceExhausted(
                    f"budget: tenant {self.tenant!r} spent ${self._spend:.4f} of its "
                    f"${limit:.4f} {self.settings.period} budget",
                    field="budget",
                )

    def record(self, cost_usd: float, now: float, *, new_request: bool = True) -> None:
        """Account one served request's cost and move the pacer; with ``new_request=False``
        the cost (a fallback's call for a request already counted) only adds to the spend."""
        with self._lock:
            self._roll(now)
            self._spend += cost_usd
            self._local_spend += cost_usd
            self._own_spend += cost_usd
            if new_request:
                self._requests += 1
                self._local_requests += 1
                self._own_requests += 1
                if self.pacer is not None:
                    self.pacer.observe(cost_usd)

    def restore(self, spend_usd: float, requests: int, now: float) -> None:
        """Add the current period's spend read back from the log after a restart, so a
        restart does not reset the hard cap (``Router.restore_pacers`` rebuilds the pacer).

        The restored spend also counts as this process's new spend for ``take_local``: each
        serving process reads back only its own log, and the first merge round after a
        restart hands it to the others, so the cap holds for the whole server again."""
        with self._lock:
            self._roll(now)
            self._spend += spend_usd
            self._requests += requests
            self._local_spend += spend_usd
            self._local_requests += requests
            self._own_spend += spend_usd
            self._own_requests += requests

    def take_local(self, now: float) -> tuple[float, float, int]:
        """(period start, spend, requests) recorded by this process since the last call: what
        the other serving processes must add to their own accounts (``add_remote``)."""
        with self._lock:
            self._roll(now)
            taken = (self._start, self._local_spend, self._local_requests)
            self._local_spend, self._local_requests = 0.0, 0
            return taken

    def add_remote(self, period_start: float, spend_usd: float, requests: int, now: float) -> None:
        """Count spend another serving process recorded, so the hard cap holds for the whole
        server; spend of another period (the period rolled meanwhile) is dropped. The pacer
        keeps steering this process's own mean cost."""
        with self._lock:
            self._roll(now)
            if period_start == self._start:
                self._spend += spend_usd
                self._requests += requests

    @property
    def multiplier(self) -> float:
        """Extra reward points per USD the pacer currently charges."""
        return 0.0 if self.pacer is None else self.pacer.lam

    def status(self, now: float) -> BudgetStatus:
        """The current period's figures."""
        with self._lock:
            self._roll(now)
            return BudgetStatus(
                self.tenant, self.settings.period, self._start, self._spend, self._requests,
                self.settings.limit_usd, self.settings.target_usd_per_request, self.multiplier,
                self._own_spend, self._own_requests,
            )  # fmt: skip
