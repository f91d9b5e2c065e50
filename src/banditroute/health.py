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

Its parts live in their own modules: the breaker (:mod:`banditroute.breaker`), load limits and
their window (:mod:`banditroute.load_limits`), one model's state and the snapshot made of it
(:mod:`banditroute.model_state`), each tenant's outcomes (:mod:`banditroute.health_tenants`);
this module holds the tracker that ties them together under one lock, and shares outcomes
with the other serving processes.

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

import structlog

from banditroute.breaker import CLOSED, HALF_OPEN, BreakerState
from banditroute.health_settings import HealthSettings
from banditroute.health_tenants import lower_median
from banditroute.load_limits import RATE_BUCKET_S, RATE_WINDOW_S, ModelLimits
from banditroute.model_state import ModelHealth, ModelState, check_outcome
from banditroute.outcomes import OutcomeStatus
from banditroute.tenancy import DEFAULT_TENANT

log = structlog.get_logger(__name__)

MAX_SHARED_OUTCOMES = 100_000
"""Outcomes a serving process keeps for its peers between two merge rounds (a round every few
seconds; past this, under an outage storm, the oldest are dropped and counted)."""

SharedOutcome = tuple[str, str, float | None, str]
"""(model, status name, latency_ms, tenant): one outcome as serving processes exchange it
(plain values, so it pickles and survives a version skew of the enum)."""


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
        self._models: dict[str, ModelState] = {}
        self._outbox: deque[SharedOutcome] | None = None
        self._dropped = 0
        self._open_listeners: list[Callable[[str, str], None]] = []
        self._opened: list[tuple[str, str]] = []  # (model, cause) opened under the lock
        self._reset_listeners: list[Callable[[str], None]] = []
        for model in self._limits:
            self._state(model)

    # -- internals (call with the lock held) -----------------------------------------------------
    def _state(self, model: str) -> ModelState:
        state = self._models.get(model)
        if state is None:
            state = ModelState(model, self._limits.get(model), self.settings.latency_window)
            self._models[model] = state
        return state

    def _open(self, st: ModelState, now: float, cause: str) -> None:
        if self._open_listeners:
            self._opened.append((st.model, cause))
        st.breaker.open(now, cause)

    # -- operator's reset and configuration reload ------------------------------------------------
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
            self._state(model).close()
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
            breaker = self._state(model).breaker
            return breaker.force_open(self._clock(), retry_in_s, cause, self.settings)

    def _record(
        self,
        model: str,
        status: OutcomeStatus,
        latency_ms: float | None,
        tenant: str,
        *,
        share: bool,
    ) -> None:
        check_outcome(status, latency_ms)
        settings = self.settings
        with self._lock:
            if share and self._outbox is not None:
                if len(self._outbox) == self._outbox.maxlen:
                    self._dropped += 1
                self._outbox.append((model, str(status), latency_ms, tenant))
            st = self._state(model)
            failed = st.count(status, latency_ms, tenant, settings)
            breaker = st.breaker
            if breaker.state == CLOSED:
                if failed:
                    self._trip_if_needed(st)
                return
            now = self._clock()
            breaker.refresh(now, settings)
            if breaker.state == HALF_OPEN:
                if failed:
                    self._open(st, now, f"a failed half-open probe ({status})")
                else:
                    st.close()
            # While open, outcomes of routes admitted before it opened are counted only.

    def _trip_if_needed(self, st: ModelState) -> None:
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
            breaker = self._state(model).breaker
            if breaker.state != CLOSED:
                breaker.refresh(self._clock(), self.settings)
            return breaker.state

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
            if st.unhindered:
                return None  # the common case: no clock read, no window to prune
            return st.reason(self._clock(), tokens, self.settings)

    def admit(self, model: str, tokens: int) -> None:
        """Account one route to ``model``: requests and tokens in the 60 s window, one more in
        flight, and one probe slot taken while half-open. Does not check limits: see
        :meth:`try_admit` for the check and the accounting in one step.
        """
        if tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {tokens!r}")
        now = self._clock()
        with self._lock:
            self._state(model).admit(now, tokens, self.settings)

    def try_admit(self, model: str, tokens: int, *, expected_output_tokens: int = 0) -> str | None:
        """Check ``model`` (as :meth:`unavailable_reason`, for ``tokens`` plus the expected
        output) and admit it (as :meth:`admit`, for ``tokens``) under one lock; None when
        admitted, else why not. Concurrent routes cannot both take a model's last slot."""
        if tokens < 0 or expected_output_tokens < 0:
            raise ValueError(f"tokens: must be >= 0, got {tokens!r} / {expected_output_tokens!r}")
        now = self._clock()
        with self._lock:
            st = self._state(model)
            if not st.unhindered:
                why = st.reason(now, tokens + expected_output_tokens, self.settings)
                if why is not None:
                    return why
            st.admit(now, tokens, self.settings)
            return None

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
                st = ModelState(model, self._limits.get(model), self.settings.latency_window)
            return st.snapshot(self._clock(), self.settings)

    def snapshot(self) -> dict[str, ModelHealth]:
        """The health of every tracked model, by model id in sorted order."""
        with self._lock:
            now = self._clock()
            return {
                model: self._models[model].snapshot(now, self.settings)
                for model in sorted(self._models)
            }


__all__ = [
    "MAX_SHARED_OUTCOMES",
    "RATE_BUCKET_S",
    "RATE_WINDOW_S",
    "BreakerState",
    "HealthSettings",
    "HealthTracker",
    "ModelHealth",
    "ModelLimits",
    "SharedOutcome",
]
