"""Model health: per-model outcome statistics, a circuit breaker and load limits.

Feedback tells the router how each call to a model ended. :class:`HealthTracker` turns those
outcomes into a per-model circuit breaker, and the routes it is told about (``admit``) into
per-model load figures, so Route can keep failing or saturated models out of the eligible set
and out of the fallback list, and say why. No transport, no I/O; time comes from an injectable
clock so tests (and the simulator) control it.

Circuit breaker, per model::

    closed --(consecutive_failures failures in a row, or an error rate >= threshold
              over >= min_samples recent outcomes)--> open
    open --(cooldown_s elapsed)--> half_open            (checked lazily against the clock)
    half_open: at most half_open_probes routes are admitted; then
        a served outcome (OK or REFUSED) --> closed     (recent window and failure run reset)
        a failure (ERROR, TIMEOUT, RATE_LIMITED) --> open, with a fresh cooldown

Tenants: the breaker serves every tenant, but each tenant's feedback is its own say-so. In a
deployment that serves several tenants the breaker opens only when, besides the rule above
holding over all outcomes, it also holds over the outcomes of each of at least ``min_tenants``
tenants on their own (one tenant reporting false failures cannot take a model away from the
others); where only one tenant can call, its outcomes trip the breaker as before. Likewise
Route's latency estimate (:meth:`HealthTracker.latency_p50`) is then the lower median of the
tenants' own medians (see :mod:`banditroute.health_tenants`).

Outcomes carry no admission id, so in half_open the next outcome decides, whichever request it
belongs to (a straggler routed before the breaker opened counts too: it is still recent news
about the model). A probe whose outcome never arrives would keep the breaker half-open and
closed to traffic forever, so when all probe slots are taken and ``cooldown_s`` passes without
a deciding outcome, the slots are re-armed.

Load limits (:class:`ModelLimits`) count admitted routes and their tokens over a sliding
60-second window kept in one-second buckets (constant memory and time whatever the traffic),
plus routes in flight (``admit`` +1, ``release`` -1). A bucket expires only once all of it is
older than 60 s, so an admission counts for between 60 and 61 seconds: the window errs towards
holding a model back, never towards overrunning a provider's quota.

Thread safety: one lock guards all state; every public method takes it once and does O(1)
work under it (amortised; the window prunes expired buckets). Checking a model with
``unavailable_reason`` and then admitting it are two calls, so concurrent Route calls may admit
a few more routes than a limit (at most one per concurrent caller).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog
from river import stats as river_stats

from banditroute.health_settings import HealthSettings, is_plain_int
from banditroute.health_tenants import FailureWindow, TenantOutcomes, lower_median
from banditroute.outcomes import OutcomeStatus
from banditroute.tenancy import DEFAULT_TENANT

log = structlog.get_logger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
"""Where a model's circuit breaker stands."""

RATE_WINDOW_S = 60
"""Length of the sliding window that requests/min and tokens/min limits count over."""

RATE_BUCKET_S = 1.0
"""Granularity of that window: admissions are summed per bucket of this many seconds."""

MAX_SHARED_OUTCOMES = 100_000
"""Outcomes a serving process keeps for its peers between two merge rounds (a round every few
seconds; past this, under an outage storm, the oldest are dropped and counted)."""

SharedOutcome = tuple[str, str, float | None, str]
"""(model, status name, latency_ms, tenant): one outcome as serving processes exchange it
(plain values, so it pickles and survives a version skew of the enum)."""

_CLOSED: BreakerState = "closed"
_OPEN: BreakerState = "open"
_HALF_OPEN: BreakerState = "half_open"

_FAILURE_STATUSES = frozenset(
    {OutcomeStatus.ERROR, OutcomeStatus.TIMEOUT, OutcomeStatus.RATE_LIMITED}
)
_COUNTER = {
    OutcomeStatus.OK: "ok",
    OutcomeStatus.ERROR: "errors",
    OutcomeStatus.TIMEOUT: "timeouts",
    OutcomeStatus.RATE_LIMITED: "rate_limited",
    OutcomeStatus.REFUSED: "refused",
}


@dataclass(frozen=True)
class ModelLimits:
    """Load limits of one model (None = unlimited), typically its provider quota.

    Requests and tokens are counted over a sliding 60-second window of admitted routes;
    ``max_in_flight`` bounds routes admitted and not yet released.
    """

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (not is_plain_int(value) or value < 1):
                raise ValueError(f"{name}: must be an integer >= 1 or None, got {value!r}")

    @property
    def unlimited(self) -> bool:
        """True when no limit is set."""
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.max_in_flight is None
        )


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


class _RateWindow:
    """Admitted requests and tokens over the last 60 s, in one-second buckets."""

    __slots__ = ("_buckets", "requests", "tokens")

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, tokens]
        self.requests = 0
        self.tokens = 0

    def prune(self, now: float) -> None:
        """Drop buckets that lie entirely more than 60 s in the past."""
        buckets = self._buckets
        # Bucket k covers [k, k + 1) buckets of time; it expires once k + 1 + 60 <= now.
        horizon = now / RATE_BUCKET_S - RATE_WINDOW_S / RATE_BUCKET_S - 1.0
        while buckets and buckets[0][0] <= horizon:
            _, requests, tokens = buckets.popleft()
            self.requests -= requests
            self.tokens -= tokens

    def add(self, now: float, tokens: int) -> None:
        """Count one admitted request with its tokens."""
        index = math.floor(now / RATE_BUCKET_S)
        buckets = self._buckets
        if buckets and buckets[-1][0] >= index:
            # Same bucket (or a clock that stepped back: keep it in the newest bucket).
            last = buckets[-1]
            last[1] += 1
            last[2] += tokens
        else:
            buckets.append([index, 1, tokens])
        self.requests += 1
        self.tokens += tokens


class _ModelState:
    """Everything the tracker keeps about one model (guarded by the tracker's lock)."""

    __slots__ = (
        "admitted", "errors", "failures", "in_flight", "last_probe_at", "latency_p50",
        "latency_p95", "latency_samples", "limits", "model", "ok", "open_cause", "opened_at",
        "probes", "rate", "rate_limited", "refused", "state", "tenants", "timeouts",
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
        self.state: BreakerState = _CLOSED
        self.opened_at: float | None = None
        self.open_cause = ""
        self.probes = 0
        self.last_probe_at: float | None = None
        self.in_flight = 0
        self.rate = _RateWindow()
        self.tenants: dict[str, TenantOutcomes] = {}

    @property
    def outcomes(self) -> int:
        """Outcomes recorded in all (served answers and failures)."""
        return self.ok + self.errors + self.timeouts + self.rate_limited + self.refused


class HealthTracker:
    """Per-model circuit breakers and load limits, fed by feedback and by admitted routes.

    ``tenants`` is how many tenants can report outcomes; with more than one, a breaker opens
    only on the failures of ``settings.min_tenants`` of them (see the module docstring).

    Route asks :meth:`unavailable_reason` for each eligible model and calls :meth:`try_admit`
    for the chosen one (:meth:`admit` accounts without the check); Feedback calls
    :meth:`record_outcome` and :meth:`release` (as does the expiry of a decision's reward
    window, without an outcome). Models are tracked from their first mention; models with
    limits are known from the start.

    >>> now = [0.0]
    >>> tracker = HealthTracker(HealthSettings(consecutive_failures=2), clock=lambda: now[0])
    >>> for _ in range(2):
    ...     tracker.record_outcome("m", OutcomeStatus.TIMEOUT, None)
    >>> tracker.unavailable_reason("m")
    'circuit open after 2 consecutive failures; retry in 30s'
    >>> now[0] = 30.0
    >>> tracker.breaker_state("m")
    'half_open'
    >>> tracker.admit("m", 100)
    >>> tracker.record_outcome("m", OutcomeStatus.OK, 850.0)
    >>> tracker.breaker_state("m"), tracker.stats("m").latency_p50_ms
    ('closed', 850.0)
    """

    def __init__(
        self,
        settings: HealthSettings | None = None,
        limits: Mapping[str, ModelLimits] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        tenants: int = 1,
    ) -> None:
        self.settings = settings or HealthSettings()
        self._min_tenants = max(1, min(self.settings.min_tenants, tenants))
        self._limits = {
            model: limit for model, limit in (limits or {}).items() if not limit.unlimited
        }
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[str, _ModelState] = {}
        self._outbox: deque[SharedOutcome] | None = None
        self._dropped = 0
        self._open_listeners: list[Callable[[str, str], None]] = []
        self._opened: list[tuple[str, str]] = []  # (model, cause) opened under the lock
        self._reset_listeners: list[Callable[[str], None]] = []
        for model in self._limits:
            self._state(model)

    # -- internals (call with the lock held) -----------------------------------------------------
    def _state(self, model: str) -> _ModelState:
        state = self._models.get(model)
        if state is None:
            state = _ModelState(model, self._limits.get(model), self.settings.latency_window)
            self._models[model] = state
        return state

    def _refresh(self, st: _ModelState, now: float) -> None:
        """Apply the time-driven transitions: open -> half_open, re-arming lost probes."""
        cooldown = self.settings.cooldown_s
        if st.state == _OPEN:
            if st.opened_at is not None and now >= st.opened_at + cooldown:
                st.state = _HALF_OPEN
                st.probes = 0
                st.last_probe_at = None
        elif (
            st.state == _HALF_OPEN
            and st.probes >= self.settings.half_open_probes
            and st.last_probe_at is not None
            and now >= st.last_probe_at + cooldown
        ):
            st.probes = 0

    def _open(self, st: _ModelState, now: float, cause: str) -> None:
        if self._open_listeners:
            self._opened.append((st.model, cause))
        st.state = _OPEN
        st.opened_at = now
        st.open_cause = cause
        st.probes = 0
        st.last_probe_at = None

    def _close(self, st: _ModelState) -> None:
        st.state = _CLOSED
        st.opened_at = None
        st.open_cause = ""
        st.probes = 0
        st.last_probe_at = None
        # Start the rate rule afresh: the failures that opened the breaker are old news.
        st.failures.clear()
        for outcomes in st.tenants.values():
            outcomes.failures.clear()

    def _reason(self, st: _ModelState, now: float, tokens: int) -> str | None:
        self._refresh(st, now)
        if st.state == _OPEN:
            assert st.opened_at is not None
            retry = max(0.0, st.opened_at + self.settings.cooldown_s - now)
            return f"circuit open after {st.open_cause}; retry in {math.ceil(retry)}s"
        if st.state == _HALF_OPEN and st.probes >= self.settings.half_open_probes:
            return f"circuit half-open: {st.probes} probe route(s) admitted, waiting for an outcome"
        limits = st.limits
        if limits is None:
            return None
        if limits.max_in_flight is not None and st.in_flight >= limits.max_in_flight:
            return f"in-flight limit {limits.max_in_flight} reached"
        rate = st.rate
        rate.prune(now)
        rpm = limits.requests_per_minute
        if rpm is not None and rate.requests >= rpm:
            return f"rate limit {rpm} requests/min reached"
        tpm = limits.tokens_per_minute
        if tpm is not None and (rate.tokens >= tpm or rate.tokens + tokens > tpm):
            return (
                f"token limit {tpm} tokens/min reached "
                f"({rate.tokens} used in the last minute, {tokens} requested)"
            )
        return None

    def _snapshot(self, st: _ModelState, now: float) -> ModelHealth:
        reason = self._reason(st, now, 0)  # refreshes the state and prunes the rate window
        recent = len(st.failures.recent)
        if st.state == _OPEN:
            assert st.opened_at is not None
            retry_in: float | None = max(0.0, st.opened_at + self.settings.cooldown_s - now)
        else:
            retry_in = 0.0 if st.state == _HALF_OPEN else None
        st.rate.prune(now)
        return ModelHealth(
            model=st.model,
            state=st.state,
            requests=st.outcomes,
            ok=st.ok,
            errors=st.errors,
            timeouts=st.timeouts,
            rate_limited=st.rate_limited,
            refused=st.refused,
            recent=recent,
            error_rate=st.failures.recent_failures / recent if recent else 0.0,
            consecutive_failures=st.failures.consecutive,
            latency_p50_ms=st.latency_p50.get(),
            latency_p95_ms=st.latency_p95.get(),
            latency_count=st.latency_samples,
            admitted=st.admitted,
            requests_last_minute=st.rate.requests,
            tokens_last_minute=st.rate.tokens,
            in_flight=st.in_flight,
            opened_at=st.opened_at,
            retry_in_s=retry_in,
            reason=reason,
        )

    def on_reset(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(model)`` after an operator's :meth:`reset` (not a relayed one)."""
        self._reset_listeners.append(listener)

    def reset(self, model: str, *, announce: bool = True) -> None:
        """Close the model's breaker and forget its recent failures (an operator's override);
        counts, latency quantiles, rate windows and in-flight calls are kept. With
        ``announce`` the :meth:`on_reset` listeners are told (other replicas reset too).

        The model's outcomes not yet taken for the other serving processes are dropped too:
        each of them resets the model as well, and the failures that came before the reset
        would otherwise re-open its breaker there at the next merge round."""
        with self._lock:
            self._close(self._state(model))
            outbox = self._outbox
            if outbox:
                kept = [outcome for outcome in outbox if outcome[0] != model]
                outbox.clear()
                outbox.extend(kept)
        if announce:
            for listener in self._reset_listeners:
                listener(model)

    def reconfigure(
        self, settings: HealthSettings, limits: Mapping[str, ModelLimits], *, tenants: int = 1
    ) -> None:
        """Apply new breaker settings and load limits (a configuration reload); every model's
        statistics, breaker state, rate window and in-flight count are kept. A model without
        limits now is unlimited from now on; ``latency_window`` sizes only the quantiles of
        models first seen from now on (a reload refuses to change it)."""
        with self._lock:
            self.settings = settings
            self._min_tenants = max(1, min(settings.min_tenants, tenants))
            self._limits = {model: limit for model, limit in limits.items() if not limit.unlimited}
            for model, state in self._models.items():
                state.limits = self._limits.get(model)
            for model in self._limits:
                self._state(model)

    # -- sharing with other serving processes ------------------------------------------------------
    def share_outcomes(self, limit: int = MAX_SHARED_OUTCOMES) -> None:
        """Keep every outcome recorded here (not those added from peers) for
        :meth:`take_outcomes`, at most ``limit`` of them between two takes (the oldest go
        first), so that the serving processes of one server judge each model on everyone's
        outcomes."""
        if limit <= 0:
            raise ValueError(f"limit must be > 0, got {limit}")
        with self._lock:
            self._outbox = deque(maxlen=limit)

    def take_outcomes(self) -> list[SharedOutcome]:
        """The outcomes recorded here since the last take, oldest first (empty unless
        :meth:`share_outcomes` was called)."""
        with self._lock:
            if not self._outbox:
                return []
            taken = list(self._outbox)
            self._outbox.clear()
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("shared_outcomes_dropped", dropped=dropped)
        return taken

    def add_outcomes(self, outcomes: Iterable[SharedOutcome]) -> int:
        """Record outcomes another serving process took with :meth:`take_outcomes`, as if
        they had been reported here (breakers move on them), without sharing them again;
        returns how many were recorded. Invalid ones are skipped with a warning."""
        recorded = 0
        for outcome in outcomes:
            try:
                model, status, latency_ms, tenant = outcome
                if (
                    not isinstance(model, str)
                    or not isinstance(tenant, str)
                    or not (latency_ms is None or isinstance(latency_ms, int | float))
                ):
                    raise TypeError("expected (model, status, latency_ms or None, tenant)")
                self._record(model, OutcomeStatus(status), latency_ms, tenant, share=False)
            except (TypeError, ValueError) as exc:
                log.warning("shared_outcome_skipped", outcome=repr(outcome)[:200], error=str(exc))
                continue
            recorded += 1
        if self._opened:
            self._announce_opened()
        return recorded

    # -- feedback ----------------------------------------------------------------------------------
    def record_outcome(
        self,
        model: str,
        status: OutcomeStatus,
        latency_ms: float | None,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        """Count how a call to ``model`` ended, as ``tenant`` reported it, and move its breaker
        accordingly.

        ERROR, TIMEOUT and RATE_LIMITED are failures; OK and REFUSED are served answers
        (REFUSED is counted on its own). ``latency_ms`` of a served answer feeds the latency
        quantiles; a failure's is ignored. Raises ValueError for an unknown status or a
        negative or non-finite latency.
        """
        self._record(model, status, latency_ms, tenant, share=True)
        if self._opened:
            self._announce_opened()

    def on_open(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(model, cause)`` whenever an outcome reported here opens a breaker
        (after the tracker's lock is released), so other replicas can keep the model out."""
        self._open_listeners.append(listener)

    def _announce_opened(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for model, cause in opened:
            for listener in self._open_listeners:
                try:
                    listener(model, cause)
                except Exception:
                    log.exception("breaker_listener_failed", model=model)

    def force_open(self, model: str, retry_in_s: float, cause: str) -> bool:
        """Open ``model``'s breaker for ``retry_in_s`` more seconds because another replica
        opened it (``cause`` says so); True if that changed anything. A breaker already open
        for at least as long is left alone; listeners are not told (the news came from
        elsewhere)."""
        if not (math.isfinite(retry_in_s) and retry_in_s > 0):
            return False
        with self._lock:
            now = self._clock()
            st = self._state(model)
            self._refresh(st, now)
            cooldown = self.settings.cooldown_s
            opened_at = st.opened_at
            if (
                st.state == _OPEN
                and opened_at is not None
                and opened_at + cooldown >= now + retry_in_s
            ):
                return False
            st.state = _OPEN
            st.opened_at = now + retry_in_s - cooldown
            st.open_cause = cause
            st.probes = 0
            st.last_probe_at = None
            return True

    def _record(
        self,
        model: str,
        status: OutcomeStatus,
        latency_ms: float | None,
        tenant: str,
        *,
        share: bool,
    ) -> None:
        counter = _COUNTER.get(status)
        if counter is None:
            raise ValueError(f"status: unknown outcome status {status!r}")
        if latency_ms is not None and not (math.isfinite(latency_ms) and latency_ms >= 0.0):
            raise ValueError(f"latency_ms: must be a finite number >= 0, got {latency_ms!r}")
        failed = status in _FAILURE_STATUSES
        settings = self.settings
        with self._lock:
            if share and self._outbox is not None:
                if len(self._outbox) == self._outbox.maxlen:
                    self._dropped += 1
                self._outbox.append((model, str(status), latency_ms, tenant))
            st = self._state(model)
            own = st.tenants.get(tenant)
            if own is None:
                own = st.tenants[tenant] = TenantOutcomes(settings.latency_window)
            own.record(failed, latency_ms, settings.window)
            setattr(st, counter, getattr(st, counter) + 1)
            st.failures.record(failed, settings.window)
            if not failed and latency_ms is not None:
                st.latency_p50.update(latency_ms)
                st.latency_p95.update(latency_ms)
                st.latency_samples = min(st.latency_samples + 1, settings.latency_window)
            if st.state == _CLOSED:
                if failed:
                    self._trip_if_needed(st)
                return
            now = self._clock()
            self._refresh(st, now)
            if st.state == _HALF_OPEN:
                if failed:
                    self._open(st, now, f"a failed half-open probe ({status})")
                else:
                    self._close(st)
            # While open, outcomes of routes admitted before it opened are counted only.

    def _trip_if_needed(self, st: _ModelState) -> None:
        settings = self.settings
        if self._min_tenants > 1:
            failing = sum(
                outcomes.failures.failing(
                    settings.consecutive_failures,
                    settings.min_samples,
                    settings.error_rate_threshold,
                )
                for outcomes in st.tenants.values()
            )
            if failing < self._min_tenants:
                return  # fewer tenants than min_tenants see the model failing
        cause = st.failures.cause(
            settings.consecutive_failures, settings.min_samples, settings.error_rate_threshold
        )
        if cause is not None:
            self._open(st, self._clock(), cause)

    # -- routing -----------------------------------------------------------------------------------
    def breaker_state(self, model: str) -> BreakerState:
        """The model's breaker state now (an open breaker past its cooldown is half-open)."""
        with self._lock:
            st = self._state(model)
            if st.state != _CLOSED:
                self._refresh(st, self._clock())
            return st.state

    def unavailable_reason(self, model: str, tokens: int = 0) -> str | None:
        """None if ``model`` may be chosen now for a request of ``tokens``, else why not.

        Checked in order: the breaker (open, or half-open with every probe slot taken), the
        in-flight limit, requests/min, then tokens/min (which refuses when the minute's tokens
        plus ``tokens`` would exceed the limit).
        """
        if tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {tokens!r}")
        with self._lock:
            st = self._state(model)
            if st.state == _CLOSED and st.limits is None:
                return None  # the common case: no clock read, no window to prune
            return self._reason(st, self._clock(), tokens)

    def admit(self, model: str, tokens: int) -> None:
        """Account one route to ``model``: requests and tokens in the 60 s window, one more in
        flight, and one probe slot taken while half-open. Does not check limits: see
        :meth:`try_admit` for the check and the accounting in one step.
        """
        if tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {tokens!r}")
        now = self._clock()
        with self._lock:
            self._admit(self._state(model), now, tokens)

    def try_admit(self, model: str, tokens: int, *, expected_output_tokens: int = 0) -> str | None:
        """Check ``model`` (as :meth:`unavailable_reason`, for ``tokens`` plus the expected
        output) and admit it (as :meth:`admit`, for ``tokens``) under one lock; None when
        admitted, else why not. Concurrent routes cannot both take a model's last slot."""
        if tokens < 0 or expected_output_tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {tokens!r} / {expected_output_tokens!r}")
        now = self._clock()
        with self._lock:
            st = self._state(model)
            if not (st.state == _CLOSED and st.limits is None):
                why = self._reason(st, now, tokens + expected_output_tokens)
                if why is not None:
                    return why
            self._admit(st, now, tokens)
            return None

    def _admit(self, st: _ModelState, now: float, tokens: int) -> None:
        st.admitted += 1
        st.in_flight += 1
        rate = st.rate
        rate.prune(now)
        rate.add(now, tokens)
        if st.state != _CLOSED:
            self._refresh(st, now)
            if st.state == _HALF_OPEN:
                st.probes += 1
                st.last_probe_at = now

    def release(self, model: str) -> None:
        """One route to ``model`` is over (feedback came or its reward window closed).

        In-flight never goes below zero, so a release without an admit is harmless.
        """
        with self._lock:
            st = self._models.get(model)
            if st is not None and st.in_flight > 0:
                st.in_flight -= 1

    # -- views -------------------------------------------------------------------------------------
    def latency_p50(self, model: str, min_samples: int = 1) -> float | None:
        """The model's median latency once it has ``min_samples`` outcomes, else None: what
        :meth:`stats` reports, without building a snapshot (Route asks it per model).

        With several tenants (``min_tenants`` > 1), the lower median of the medians of the
        tenants with ``min_samples`` served answers each, once there are ``min_tenants`` of
        them (else None), so no tenant alone can make a model look slow to the others."""
        with self._lock:
            st = self._models.get(model)
            if st is None or st.outcomes < min_samples:
                return None
            if self._min_tenants > 1:
                medians = [own.median() for own in st.tenants.values() if own.served >= min_samples]
                return lower_median(medians) if len(medians) >= self._min_tenants else None
            p50: float | None = st.latency_p50.get()
            return p50

    def stats(self, model: str) -> ModelHealth:
        """The health of one model now (zeros for a model never mentioned, without tracking it)."""
        with self._lock:
            st = self._models.get(model)
            if st is None:
                st = _ModelState(model, self._limits.get(model), self.settings.latency_window)
            return self._snapshot(st, self._clock())

    def snapshot(self) -> dict[str, ModelHealth]:
        """The health of every tracked model, by model id in sorted order."""
        with self._lock:
            now = self._clock()
            return {
                model: self._snapshot(self._models[model], now) for model in sorted(self._models)
            }


__all__ = [
    "RATE_BUCKET_S",
    "RATE_WINDOW_S",
    "BreakerState",
    "HealthSettings",
    "HealthTracker",
    "ModelHealth",
    "ModelLimits",
]
