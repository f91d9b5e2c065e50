"""Model health: circuit breaker, load limits, latency quantiles, snapshots and thread safety."""

from __future__ import annotations

import doctest
import math
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from fake_clock import T0
from fake_clock import FakeClock as Clock
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from banditroute import health
from banditroute.health import (
    HealthSettings,
    HealthTracker,
    ModelHealth,
    ModelLimits,
)
from banditroute.outcomes import OutcomeStatus

OK = OutcomeStatus.OK
ERROR = OutcomeStatus.ERROR
TIMEOUT = OutcomeStatus.TIMEOUT
RATE_LIMITED = OutcomeStatus.RATE_LIMITED
REFUSED = OutcomeStatus.REFUSED
FAILURES = (ERROR, TIMEOUT, RATE_LIMITED)


def _tracker(
    clock: Clock, limits: dict[str, ModelLimits] | None = None, **settings: float
) -> HealthTracker:
    return HealthTracker(HealthSettings(**settings), limits or {}, clock=clock)  # type: ignore[arg-type]


def _open_by_consecutive(tracker: HealthTracker, model: str = "m") -> None:
    for _ in range(tracker.settings.consecutive_failures):
        tracker.record_outcome(model, TIMEOUT, None)
    assert tracker.breaker_state(model) == "open"


# -- opening ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", FAILURES)
def test_consecutive_failures_open_the_breaker(clock: Clock, status: OutcomeStatus) -> None:
    """consecutive_failures failures in a row open the breaker, whatever the min_samples."""
    tracker = _tracker(clock, consecutive_failures=3, min_samples=20, window=50)
    for _ in range(2):
        tracker.record_outcome("m", status, 100.0)
    assert tracker.breaker_state("m") == "closed"
    assert tracker.unavailable_reason("m") is None
    tracker.record_outcome("m", status, 100.0)
    assert tracker.breaker_state("m") == "open"
    assert tracker.unavailable_reason("m") == (
        "circuit open after 3 consecutive failures; retry in 30s"
    )


def test_a_served_answer_breaks_the_failure_run(clock: Clock) -> None:
    """An OK (or REFUSED) outcome resets the run of consecutive failures."""
    tracker = _tracker(clock, consecutive_failures=3, min_samples=50, window=50)
    for served in (OK, REFUSED, OK):
        tracker.record_outcome("m", ERROR, None)
        tracker.record_outcome("m", ERROR, None)
        tracker.record_outcome("m", served, 10.0)
    assert tracker.breaker_state("m") == "closed"
    assert tracker.stats("m").consecutive_failures == 0


def test_error_rate_opens_only_once_min_samples_are_in(clock: Clock) -> None:
    """A failure share >= threshold opens the breaker, but not before min_samples outcomes."""
    tracker = _tracker(clock, consecutive_failures=100, min_samples=10, error_rate_threshold=0.5)
    for i in range(9):  # F O F O F O F O F: 5/9 failures, but only 9 samples
        tracker.record_outcome("m", ERROR if i % 2 == 0 else OK, 50.0)
    assert tracker.breaker_state("m") == "closed"
    assert tracker.stats("m").error_rate == pytest.approx(5 / 9)
    tracker.record_outcome("m", TIMEOUT, None)  # 6/10
    assert tracker.breaker_state("m") == "open"
    reason = tracker.unavailable_reason("m")
    assert reason == (
        "circuit open after a 60% error rate over the last 10 outcomes (threshold 50%); "
        "retry in 30s"
    )


def test_an_error_rate_exactly_at_the_threshold_opens(clock: Clock) -> None:
    """The breaker opens when the failure share reaches the threshold, not only beyond it."""
    tracker = _tracker(clock, consecutive_failures=100, min_samples=10, error_rate_threshold=0.5)
    for i in range(9):  # O F O F O F O F O: 4/9
        tracker.record_outcome("m", ERROR if i % 2 else OK, 50.0)
    assert tracker.breaker_state("m") == "closed"
    tracker.record_outcome("m", ERROR, None)  # 5/10
    assert tracker.breaker_state("m") == "open"


@pytest.mark.parametrize("failures", [0, 1, 4])
def test_stays_closed_below_the_threshold(clock: Clock, failures: int) -> None:
    """A failure share below error_rate_threshold keeps the breaker closed, however long."""
    tracker = _tracker(clock, consecutive_failures=100, min_samples=10, error_rate_threshold=0.5)
    for _ in range(20):  # blocks of 10 outcomes, the failures last: the worst moment to check
        for _ in range(10 - failures):
            tracker.record_outcome("m", OK, 20.0)
        for _ in range(failures):
            tracker.record_outcome("m", RATE_LIMITED, None)
        assert tracker.breaker_state("m") == "closed"
    assert tracker.stats("m").error_rate == pytest.approx(failures / 10)


def test_error_rate_counts_only_the_recent_window(clock: Clock) -> None:
    """Old failures fall out of the window: the error rate covers the last ``window`` outcomes."""
    tracker = _tracker(clock, window=10, min_samples=10, consecutive_failures=5)
    for _ in range(4):
        tracker.record_outcome("m", ERROR, None)
    assert tracker.stats("m").error_rate == 1.0
    for _ in range(6):
        tracker.record_outcome("m", OK, 1.0)
    assert tracker.stats("m").error_rate == pytest.approx(0.4)
    for _ in range(4):
        tracker.record_outcome("m", OK, 1.0)
    health_now = tracker.stats("m")
    assert (health_now.error_rate, health_now.recent, health_now.requests) == (0.0, 10, 14)


def test_refused_is_served_but_counted_apart(clock: Clock) -> None:
    """REFUSED counts as a served answer (no failure, feeds latency) in its own counter."""
    tracker = _tracker(clock, consecutive_failures=2, min_samples=2, window=4)
    for _ in range(10):
        tracker.record_outcome("m", REFUSED, 300.0)
    h = tracker.stats("m")
    assert (h.state, h.refused, h.ok, h.error_rate, h.latency_p50_ms) == (
        "closed", 10, 0, 0.0, 300.0,
    )  # fmt: skip


def test_models_are_independent(clock: Clock) -> None:
    """One model's failures do not open another model's breaker."""
    tracker = _tracker(clock, consecutive_failures=2)
    _open_by_consecutive(tracker, "a")
    assert tracker.breaker_state("b") == "closed"
    assert tracker.unavailable_reason("b") is None


# -- cooldown, half-open, probes -------------------------------------------------------------------
def test_cooldown_turns_open_into_half_open(clock: Clock) -> None:
    """An open breaker refuses until cooldown_s has passed, counting down, then turns half-open."""
    tracker = _tracker(clock, consecutive_failures=2, cooldown_s=30.0)
    _open_by_consecutive(tracker)
    clock.advance(17.5)
    assert tracker.unavailable_reason("m") == (
        "circuit open after 2 consecutive failures; retry in 13s"
    )
    assert tracker.stats("m").retry_in_s == pytest.approx(12.5)
    clock.advance(12.4)
    assert tracker.breaker_state("m") == "open"
    clock.advance(0.1)
    assert tracker.breaker_state("m") == "half_open"
    assert tracker.unavailable_reason("m") is None
    assert tracker.stats("m").retry_in_s == 0.0


@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_exactly_the_probes_then_refuses(clock: Clock, probes: int) -> None:
    """While half-open, exactly half_open_probes routes are admitted before an outcome decides."""
    tracker = _tracker(clock, consecutive_failures=2, half_open_probes=probes)
    _open_by_consecutive(tracker)
    clock.advance(30.0)
    for _ in range(probes):
        assert tracker.unavailable_reason("m") is None
        tracker.admit("m", 10)
    reason = tracker.unavailable_reason("m")
    assert reason == (
        f"circuit half-open: {probes} probe route(s) admitted, waiting for an outcome"
    )
    clock.advance(29.0)  # still no outcome, and within a cooldown of the last probe
    assert tracker.unavailable_reason("m") == reason
    assert tracker.breaker_state("m") == "half_open"


@pytest.mark.parametrize("served", [OK, REFUSED])
def test_a_served_probe_closes_the_breaker(clock: Clock, served: OutcomeStatus) -> None:
    """A served outcome while half-open closes the breaker and starts the windows afresh."""
    tracker = _tracker(clock, consecutive_failures=2, min_samples=3, window=3)
    _open_by_consecutive(tracker)
    clock.advance(30.0)
    tracker.admit("m", 10)
    tracker.record_outcome("m", served, 400.0)
    tracker.release("m")
    h = tracker.stats("m")
    assert (h.state, h.opened_at, h.retry_in_s, h.reason) == ("closed", None, None, None)
    assert (h.recent, h.error_rate, h.consecutive_failures) == (0, 0.0, 0)
    # The failures that opened it are forgotten: one new failure does not re-open it.
    tracker.record_outcome("m", ERROR, None)
    assert tracker.breaker_state("m") == "closed"


@pytest.mark.parametrize("status", FAILURES)
def test_a_failed_probe_reopens_with_a_fresh_cooldown(clock: Clock, status: OutcomeStatus) -> None:
    """A failure while half-open re-opens the breaker for another full cooldown."""
    tracker = _tracker(clock, consecutive_failures=2, cooldown_s=30.0)
    _open_by_consecutive(tracker)
    clock.advance(45.0)
    assert tracker.breaker_state("m") == "half_open"
    tracker.admit("m", 10)
    tracker.record_outcome("m", status, None)
    h = tracker.stats("m")
    assert (h.state, h.opened_at, h.retry_in_s) == ("open", clock.now, 30.0)
    assert h.reason == f"circuit open after a failed half-open probe ({status}); retry in 30s"
    clock.advance(29.9)
    assert tracker.breaker_state("m") == "open"
    clock.advance(0.1)
    assert tracker.breaker_state("m") == "half_open"
    assert tracker.unavailable_reason("m") is None  # the probe slots are free again


def test_lost_probe_slots_are_rearmed_after_a_cooldown(clock: Clock) -> None:
    """A probe whose outcome never comes frees its slot cooldown_s after it was admitted."""
    tracker = _tracker(clock, consecutive_failures=2, cooldown_s=10.0)
    _open_by_consecutive(tracker)
    clock.advance(10.0)
    tracker.admit("m", 10)
    assert tracker.unavailable_reason("m") is not None
    clock.advance(9.9)
    assert tracker.unavailable_reason("m") is not None
    clock.advance(0.1)
    assert tracker.unavailable_reason("m") is None
    assert tracker.breaker_state("m") == "half_open"


def test_outcomes_while_open_are_counted_without_moving_the_breaker(clock: Clock) -> None:
    """Stragglers reported while open are counted but neither close nor extend the breaker."""
    tracker = _tracker(clock, consecutive_failures=2, cooldown_s=30.0)
    _open_by_consecutive(tracker)
    opened_at = tracker.stats("m").opened_at
    clock.advance(5.0)
    tracker.record_outcome("m", OK, 100.0)
    tracker.record_outcome("m", ERROR, None)
    h = tracker.stats("m")
    assert (h.state, h.opened_at, h.requests, h.ok, h.errors) == ("open", opened_at, 4, 1, 1)
    clock.advance(25.0)
    assert tracker.breaker_state("m") == "half_open"


# -- load limits -----------------------------------------------------------------------------------
def test_requests_per_minute_refuse_at_the_limit_and_recover(clock: Clock) -> None:
    """requests_per_minute admissions fill the minute; the model is free again 60-61 s later."""
    tracker = _tracker(clock, limits={"m": ModelLimits(requests_per_minute=3)})
    for _ in range(3):
        assert tracker.unavailable_reason("m") is None
        tracker.admit("m", 0)
        tracker.release("m")
    assert tracker.unavailable_reason("m") == "rate limit 3 requests/min reached"
    clock.advance(59.9)
    assert tracker.unavailable_reason("m") == "rate limit 3 requests/min reached"
    clock.advance(1.1)
    assert tracker.unavailable_reason("m") is None
    assert tracker.stats("m").requests_last_minute == 0


def test_an_admission_counts_for_at_least_a_full_minute(clock: Clock) -> None:
    """The one-second buckets never let an admission leave the window before it is 60 s old."""
    tracker = _tracker(clock, limits={"m": ModelLimits(requests_per_minute=1)})
    clock.advance(0.9)  # late in its one-second bucket
    tracker.admit("m", 0)
    clock.advance(59.99)
    assert tracker.unavailable_reason("m") == "rate limit 1 requests/min reached"
    clock.advance(1.01)
    assert tracker.unavailable_reason("m") is None


def test_the_minute_window_slides(clock: Clock) -> None:
    """Admissions leave the window one by one as each becomes older than the window."""
    tracker = _tracker(clock, limits={"m": ModelLimits(requests_per_minute=2)})
    tracker.admit("m", 0)
    clock.advance(30.0)
    tracker.admit("m", 0)
    assert tracker.unavailable_reason("m") is not None
    clock.advance(31.0)  # the first admission is 61 s old, the second 31 s
    assert tracker.unavailable_reason("m") is None
    assert tracker.stats("m").requests_last_minute == 1
    clock.advance(30.0)
    assert tracker.stats("m").requests_last_minute == 0


def test_tokens_per_minute_refuse_a_request_that_would_exceed(clock: Clock) -> None:
    """tokens_per_minute refuses a request whose tokens would overrun the minute's budget."""
    tracker = _tracker(clock, limits={"m": ModelLimits(tokens_per_minute=1000)})
    tracker.admit("m", 700)
    assert tracker.unavailable_reason("m", 300) is None
    assert tracker.unavailable_reason("m", 301) == (
        "token limit 1000 tokens/min reached (700 used in the last minute, 301 requested)"
    )
    tracker.admit("m", 300)
    assert "tokens/min" in (tracker.unavailable_reason("m", 0) or "")
    assert tracker.stats("m").tokens_last_minute == 1000
    clock.advance(61.0)
    assert tracker.unavailable_reason("m", 1000) is None
    assert tracker.unavailable_reason("m", 1001) is not None  # can never fit


def test_in_flight_limit_with_admit_and_release(clock: Clock) -> None:
    """max_in_flight refuses while that many routes are unreleased; release frees a slot."""
    tracker = _tracker(clock, limits={"m": ModelLimits(max_in_flight=2)})
    tracker.admit("m", 1)
    tracker.admit("m", 1)
    assert tracker.unavailable_reason("m") == "in-flight limit 2 reached"
    tracker.release("m")
    assert tracker.unavailable_reason("m") is None
    assert tracker.stats("m").in_flight == 1


def test_try_admit_checks_and_counts_in_one_step(clock: Clock) -> None:
    """try_admit admits (counting in flight and in the rate window) while the limits allow,
    then answers why not without counting; the expected output tokens count in the check
    only."""
    tracker = _tracker(clock, limits={"m": ModelLimits(max_in_flight=2, tokens_per_minute=1000)})
    assert tracker.try_admit("m", 100, expected_output_tokens=300) is None
    assert tracker.try_admit("m", 100) is None
    assert tracker.try_admit("m", 1) == "in-flight limit 2 reached"
    assert tracker.stats("m").in_flight == 2
    tracker.release("m")
    assert tracker.try_admit("m", 100, expected_output_tokens=750) is not None  # 200 + 850
    assert tracker.try_admit("m", 100, expected_output_tokens=700) is None
    assert tracker.stats("m").in_flight == 2


def test_release_never_goes_below_zero(clock: Clock) -> None:
    """Extra releases (or releases of unknown models) leave in-flight at zero."""
    tracker = _tracker(clock)
    tracker.admit("m", 1)
    for _ in range(3):
        tracker.release("m")
    tracker.release("never-seen")
    assert tracker.stats("m").in_flight == 0
    assert "never-seen" not in tracker.snapshot()
    tracker.admit("m", 1)
    assert tracker.stats("m").in_flight == 1


def test_breaker_is_checked_before_limits(clock: Clock) -> None:
    """An open breaker is the reason given even when a limit is also reached."""
    tracker = _tracker(clock, limits={"m": ModelLimits(max_in_flight=1)}, consecutive_failures=2)
    tracker.admit("m", 1)
    _open_by_consecutive(tracker)
    assert (tracker.unavailable_reason("m") or "").startswith("circuit open")


# -- latency ---------------------------------------------------------------------------------------
def test_latency_quantiles_are_close_to_the_truth(clock: Clock) -> None:
    """p50/p95 over a lognormal sample match its exact and its theoretical quantiles."""
    rng = np.random.default_rng(7)
    mu, sigma = math.log(800.0), 0.5
    samples = rng.lognormal(mu, sigma, 2000)
    tracker = _tracker(clock, latency_window=2000)
    for value in samples:
        tracker.record_outcome("m", OK, float(value))
    h = tracker.stats("m")
    assert h.latency_p50_ms is not None
    assert h.latency_p95_ms is not None
    assert h.latency_p50_ms == pytest.approx(np.quantile(samples, 0.5), rel=0.01)
    assert h.latency_p95_ms == pytest.approx(np.quantile(samples, 0.95), rel=0.01)
    assert h.latency_p50_ms == pytest.approx(800.0, rel=0.05)
    assert h.latency_p95_ms == pytest.approx(800.0 * math.exp(1.6449 * sigma), rel=0.05)


def test_latency_follows_the_recent_window_and_ignores_failures(clock: Clock) -> None:
    """Quantiles cover the last latency_window served answers (latency_count says how many,
    at most the window); failures' latency is ignored."""
    tracker = _tracker(clock, latency_window=20, consecutive_failures=100, min_samples=50)
    assert (tracker.stats("m").latency_p50_ms, tracker.stats("m").latency_count) == (None, 0)
    tracker.record_outcome("m", TIMEOUT, 30000.0)
    tracker.record_outcome("m", OK, None)
    assert tracker.stats("m").latency_count == 0
    for _ in range(100):
        tracker.record_outcome("m", OK, 100.0)
    for _ in range(20):
        tracker.record_outcome("m", OK, 2000.0)
        tracker.record_outcome("m", TIMEOUT, 30000.0)
        tracker.record_outcome("m", ERROR, 1.0)
    h = tracker.stats("m")
    assert (h.latency_p50_ms, h.latency_p95_ms, h.latency_count) == (2000.0, 2000.0, 20)


# -- views -----------------------------------------------------------------------------------------
def test_snapshot_contents(clock: Clock) -> None:
    """snapshot() lists every tracked model (and every model with limits) with its figures."""
    limits = {"a": ModelLimits(requests_per_minute=100, tokens_per_minute=10_000, max_in_flight=4),
              "idle": ModelLimits(max_in_flight=1), "free": ModelLimits()}  # fmt: skip
    tracker = _tracker(clock, limits=limits, consecutive_failures=3)
    for latency in (100.0, 200.0, 300.0):
        tracker.admit("a", 500)
        tracker.record_outcome("a", OK, latency)
    tracker.admit("a", 250)
    tracker.release("a")
    tracker.record_outcome("a", REFUSED, 400.0)
    tracker.record_outcome("a", RATE_LIMITED, None)
    for status in (ERROR, TIMEOUT, ERROR):
        tracker.record_outcome("b", status, None)
    clock.advance(10.0)
    snap = tracker.snapshot()
    assert list(snap) == ["a", "b", "idle"]  # sorted; "free" has no limits and no traffic
    assert snap["a"].latency_p95_ms == pytest.approx(385.0)  # interpolated over 4 answers
    assert replace(snap["a"], latency_p95_ms=385.0) == ModelHealth(
        model="a", state="closed", requests=5, ok=3, errors=0, timeouts=0, rate_limited=1,
        refused=1, recent=5, error_rate=0.2, consecutive_failures=1, latency_p50_ms=250.0,
        latency_p95_ms=385.0, latency_count=4, admitted=4, requests_last_minute=4,
        tokens_last_minute=1750, in_flight=3, opened_at=None, retry_in_s=None, reason=None,
    )  # fmt: skip
    b = snap["b"]
    assert (b.state, b.requests, b.errors, b.timeouts, b.error_rate) == ("open", 3, 2, 1, 1.0)
    assert (b.opened_at, b.retry_in_s, b.latency_p50_ms) == (T0, 20.0, None)
    assert b.reason == "circuit open after 3 consecutive failures; retry in 20s"
    assert not b.available
    assert snap["idle"].available
    assert snap["idle"].requests == 0


def test_stats_of_an_unknown_model_is_empty_and_not_tracked(clock: Clock) -> None:
    """stats() of a never-mentioned model gives zeros without adding it to the snapshot."""
    tracker = _tracker(clock)
    h = tracker.stats("ghost")
    assert (h.state, h.requests, h.admitted, h.in_flight, h.error_rate) == ("closed", 0, 0, 0, 0.0)
    assert (h.latency_p50_ms, h.latency_p95_ms, h.reason) == (None, None, None)
    assert tracker.snapshot() == {}


def test_module_doctests_run() -> None:
    """The usage example in HealthTracker's docstring runs as written."""
    result = doctest.testmod(health)
    assert result.attempted > 0
    assert result.failed == 0


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"window": 2.5}, "window"),
        ({"min_samples": 0}, "min_samples"),
        ({"window": 5, "min_samples": 6}, "min_samples"),
        ({"error_rate_threshold": 0.0}, "error_rate_threshold"),
        ({"error_rate_threshold": 1.5}, "error_rate_threshold"),
        ({"error_rate_threshold": math.nan}, "error_rate_threshold"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"consecutive_failures": True}, "consecutive_failures"),
        ({"cooldown_s": 0.0}, "cooldown_s"),
        ({"cooldown_s": math.inf}, "cooldown_s"),
        ({"cooldown_s": -1.0}, "cooldown_s"),
        ({"half_open_probes": 0}, "half_open_probes"),
        ({"latency_window": 0}, "latency_window"),
    ],
)
def test_invalid_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    """Each invalid HealthSettings value raises ValueError whose message starts with the field."""
    with pytest.raises(ValueError, match=rf"^{field}: "):
        HealthSettings(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["requests_per_minute", "tokens_per_minute", "max_in_flight"])
@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_invalid_limits_name_the_field(field: str, value: object) -> None:
    """A limit that is not a positive integer (or None) raises ValueError naming the field."""
    with pytest.raises(ValueError, match=rf"^{field}: "):
        ModelLimits(**{field: value})  # type: ignore[arg-type]


def test_invalid_call_arguments_are_rejected(clock: Clock) -> None:
    """Negative tokens, a negative or non-finite latency and an unknown status raise ValueError."""
    tracker = _tracker(clock)
    with pytest.raises(ValueError, match=r"^tokens: "):
        tracker.admit("m", -1)
    with pytest.raises(ValueError, match=r"^tokens: "):
        tracker.unavailable_reason("m", -1)
    for latency in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^latency_ms: "):
            tracker.record_outcome("m", OK, latency)
    with pytest.raises(ValueError, match=r"^status: "):
        tracker.record_outcome("m", "BOGUS", 1.0)  # type: ignore[arg-type]
    assert tracker.stats("m").requests == 0


# -- concurrency -----------------------------------------------------------------------------------
@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads very often, to shake out races."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_use_keeps_counts_consistent(clock: Clock) -> None:
    """Threads admitting, recording, releasing and reading at once lose no update."""
    tracker = _tracker(clock, limits={"m": ModelLimits(max_in_flight=10**9)}, window=64)
    threads_n, rounds = 4, 2000
    stop = threading.Event()

    def worker(index: int) -> None:
        status = (OK, ERROR, REFUSED, OK)[index]
        for _ in range(rounds):
            tracker.unavailable_reason("m", 10)
            tracker.admit("m", 10)
            tracker.record_outcome("m", status, 5.0)
            tracker.release("m")

    def reader() -> None:
        while not stop.is_set():
            tracker.snapshot()
            tracker.breaker_state("m")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    watcher.join()
    h = tracker.stats("m")
    total = threads_n * rounds
    assert (h.admitted, h.requests, h.requests_last_minute) == (total, total, total)
    assert (h.ok, h.errors, h.refused) == (2 * rounds, rounds, rounds)
    assert h.tokens_last_minute == 10 * total
    assert h.in_flight == 0
    assert h.recent == 64


# -- properties ------------------------------------------------------------------------------------
STATUSES = st.sampled_from(list(OutcomeStatus))
LIMITS = ModelLimits(requests_per_minute=6, tokens_per_minute=2000, max_in_flight=3)
SETTINGS = HealthSettings(
    window=8, min_samples=4, consecutive_failures=3, cooldown_s=10.0, half_open_probes=1
)


class HealthMachine(RuleBasedStateMachine):
    """Random sequences of outcomes, routes, releases and clock moves on two models."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.tracker = HealthTracker(SETTINGS, {"limited": LIMITS}, clock=self.clock)
        self.in_flight = {"limited": 0, "free": 0}
        self.outcomes = {"limited": 0, "free": 0}

    models = st.sampled_from(["limited", "free"])

    @rule(model=models, status=STATUSES, latency=st.none() | st.floats(0, 1e5))
    def record(self, model: str, status: OutcomeStatus, latency: float | None) -> None:
        """Report an outcome."""
        self.tracker.record_outcome(model, status, latency)
        self.outcomes[model] += 1

    @rule(model=models, tokens=st.integers(0, 1500))
    def route(self, model: str, tokens: int) -> None:
        """Admit a route the way Route does: only when the model is available."""
        if self.tracker.unavailable_reason(model, tokens) is None:
            self.tracker.admit(model, tokens)
            self.in_flight[model] += 1

    @rule(model=models)
    def release(self, model: str) -> None:
        """Release a route (possibly one too many)."""
        self.tracker.release(model)
        self.in_flight[model] = max(0, self.in_flight[model] - 1)

    @rule(seconds=st.floats(0.0, 40.0))
    def wait(self, seconds: float) -> None:
        """Let time pass."""
        self.clock.advance(seconds)

    @invariant()
    def counts_and_state_are_valid(self) -> None:
        """No count is negative, totals add up, and the state and its timings agree."""
        snap = self.tracker.snapshot()
        for model, h in snap.items():
            counts = (h.ok, h.errors, h.timeouts, h.rate_limited, h.refused)
            assert min(counts) >= 0
            assert h.requests == sum(counts) == self.outcomes[model]
            assert h.in_flight == self.in_flight[model] >= 0
            assert 0 <= h.recent <= SETTINGS.window
            assert 0.0 <= h.error_rate <= 1.0
            assert 0 <= h.consecutive_failures <= h.requests
            assert h.requests_last_minute >= 0
            assert h.tokens_last_minute >= 0
            assert h.state in ("closed", "open", "half_open")
            assert (h.opened_at is None) == (h.state == "closed")
            assert (h.retry_in_s is None) == (h.state == "closed")
            if h.retry_in_s is not None:
                assert 0.0 <= h.retry_in_s <= SETTINGS.cooldown_s
            if h.state == "open":
                assert (h.reason or "").startswith("circuit open")
            if h.state == "closed" and h.reason is not None:
                assert not h.reason.startswith("circuit")
            if model == "limited":
                assert h.in_flight <= 3
                assert h.requests_last_minute <= 6
                assert h.tokens_last_minute <= 2000
            for value in (h.latency_p50_ms, h.latency_p95_ms):
                assert value is None or 0.0 <= value <= 1e5


TestHealthMachine = HealthMachine.TestCase
TestHealthMachine.settings = hypothesis_settings(
    max_examples=150, stateful_step_count=40, deadline=None
)


def test_reset_closes_an_open_breaker_and_keeps_counts() -> None:
    """reset() closes an open breaker at once and keeps the model's outcome counts."""
    now = [0.0]
    tracker = HealthTracker(HealthSettings(consecutive_failures=2), clock=lambda: now[0])
    for _ in range(2):
        tracker.record_outcome("m", OutcomeStatus.ERROR, None)
    assert tracker.breaker_state("m") == "open"
    tracker.reset("m")
    assert tracker.breaker_state("m") == "closed"
    assert tracker.unavailable_reason("m") is None
    assert tracker.stats("m").errors == 2


# -- sharing outcomes between serving processes ---------------------------------------------------


def test_outcomes_are_kept_for_peers_only_once_sharing_is_on(clock: Clock) -> None:
    """Without share_outcomes nothing is kept; with it, take_outcomes hands over each outcome
    recorded since the last take, in order, once."""
    tracker = _tracker(clock)
    tracker.record_outcome("m", OK, 100.0)
    assert tracker.take_outcomes() == []
    tracker.share_outcomes()
    tracker.record_outcome("m", OK, 100.0)
    tracker.record_outcome("n", TIMEOUT, None)
    tracker.record_outcome("n", OK, 5.0, "acme")
    assert tracker.take_outcomes() == [
        ("m", "OK", 100.0, "default"),
        ("n", "TIMEOUT", None, "default"),
        ("n", "OK", 5.0, "acme"),
    ]
    assert tracker.take_outcomes() == []


def test_a_peers_failures_open_this_breaker_and_are_not_shared_again(clock: Clock) -> None:
    """Failures one process saw, added to another's tracker, trip its breaker as its own
    would; the receiver does not hand them on (no echo between processes)."""
    sender, receiver = (_tracker(clock, consecutive_failures=3) for _ in range(2))
    sender.share_outcomes()
    receiver.share_outcomes()
    for _ in range(3):
        sender.record_outcome("m", ERROR, None)
    assert receiver.breaker_state("m") == "closed"
    assert receiver.add_outcomes(sender.take_outcomes()) == 3
    assert receiver.breaker_state("m") == sender.breaker_state("m") == "open"
    assert receiver.stats("m").errors == 3
    assert receiver.take_outcomes() == []


def test_a_peers_latencies_feed_the_quantiles(clock: Clock) -> None:
    """Served answers from a peer count toward latency the way local ones do."""
    sender, receiver = _tracker(clock), _tracker(clock)
    sender.share_outcomes()
    for latency in (100.0, 200.0, 300.0):
        sender.record_outcome("m", OK, latency)
    receiver.add_outcomes(sender.take_outcomes())
    assert receiver.latency_p50("m") == sender.latency_p50("m")
    assert receiver.stats("m").ok == 3


def test_invalid_shared_outcomes_are_skipped_not_fatal(clock: Clock) -> None:
    """An unknown status, a negative or non-numeric latency, or a malformed entry from a peer
    (another version's message) is skipped; the rest is recorded."""
    tracker = _tracker(clock)
    malformed: list[object] = [
        ("m", "OK"),
        ("m", "OK", 1.0),
        ("m", "OK", "fast", "t"),
        (None, "OK", 1.0, "t"),
        ("m", "OK", 1.0, None),
        42,
    ]
    recorded = tracker.add_outcomes(
        [("m", "EXPLODED", None, "t"), ("m", "OK", -5.0, "t"), ("m", "OK", 10.0, "t"), *malformed]  # type: ignore[list-item]
    )
    assert recorded == 1
    assert tracker.stats("m").ok == 1


def test_the_outbox_is_bounded_and_keeps_the_newest(clock: Clock) -> None:
    """Past the limit between two takes the oldest outcomes are dropped."""
    tracker = _tracker(clock)
    tracker.share_outcomes(limit=3)
    for latency in range(5):
        tracker.record_outcome("m", OK, float(latency))
    assert [latency for _, _, latency, _ in tracker.take_outcomes()] == [2.0, 3.0, 4.0]
    with pytest.raises(ValueError, match="limit"):
        tracker.share_outcomes(limit=0)


def test_a_reset_is_not_undone_by_failures_shared_before_it(clock: Clock) -> None:
    """ResetModelHealth resets every process; failures recorded before the reset and not yet
    handed over must not re-open the breaker in a peer at the next merge round (a single
    process forgets them at the reset)."""
    sender, receiver = (_tracker(clock, consecutive_failures=3) for _ in range(2))
    sender.share_outcomes()
    for _ in range(3):
        sender.record_outcome("m", ERROR, None)
    sender.record_outcome("n", OK, 10.0)
    for tracker in (sender, receiver):
        tracker.reset("m")
    assert receiver.add_outcomes(sender.take_outcomes()) == 1  # n's outcome still goes
    assert receiver.breaker_state("m") == sender.breaker_state("m") == "closed"


# -- tenants ---------------------------------------------------------------------------------------
def _tenant_tracker(clock: Clock, tenants: int, **settings: float) -> HealthTracker:
    return HealthTracker(HealthSettings(**settings), clock=clock, tenants=tenants)  # type: ignore[arg-type]


def test_one_tenants_failures_do_not_open_a_shared_breaker(clock: Clock) -> None:
    """Where several tenants can call, failures one tenant reports (a run or a high error
    rate, however long) leave the breaker closed for everyone; once a second tenant is also
    failing on its own outcomes, it opens."""
    tracker = _tenant_tracker(clock, tenants=3, consecutive_failures=5, min_samples=10)
    for _ in range(100):
        tracker.record_outcome("m", ERROR, None, "mallory")
    assert tracker.breaker_state("m") == "closed"
    assert tracker.unavailable_reason("m") is None
    for _ in range(4):
        tracker.record_outcome("m", TIMEOUT, None, "bob")
    assert tracker.breaker_state("m") == "closed", "bob is not failing on his own yet"
    tracker.record_outcome("m", TIMEOUT, None, "bob")
    assert tracker.breaker_state("m") == "open"


def test_a_tenants_failures_need_the_shared_rule_too(clock: Clock) -> None:
    """Two tenants failing on their own do not open the breaker while the model's outcomes as
    a whole are healthy (a third tenant's traffic is served well)."""
    tracker = _tenant_tracker(clock, tenants=3, consecutive_failures=3, min_samples=10)
    for _ in range(3):
        for _ in range(5):
            tracker.record_outcome("m", OK, 10.0, "carol")
        for tenant in ("alice", "bob"):
            tracker.record_outcome("m", ERROR, None, tenant)
    assert tracker.breaker_state("m") == "closed"


def test_a_single_tenant_deployment_trips_on_its_own_failures(clock: Clock) -> None:
    """With one tenant able to call (the default), its failures open the breaker as before,
    whatever min_tenants says."""
    tracker = _tenant_tracker(clock, tenants=1, consecutive_failures=3, min_tenants=2)
    for _ in range(3):
        tracker.record_outcome("m", ERROR, None, "default")
    assert tracker.breaker_state("m") == "open"


def test_min_tenants_one_restores_the_shared_rule(clock: Clock) -> None:
    """min_tenants = 1 opens the breaker on any outcomes meeting the rule, one tenant's too."""
    tracker = _tenant_tracker(clock, tenants=5, consecutive_failures=3, min_tenants=1)
    for _ in range(3):
        tracker.record_outcome("m", ERROR, None, "mallory")
    assert tracker.breaker_state("m") == "open"


def test_one_tenants_latencies_do_not_make_a_model_slow_for_others(clock: Clock) -> None:
    """Route's latency estimate with several tenants is the lower median of the tenants' own
    medians, once min_tenants of them have min_samples served answers: one tenant reporting
    an hour per call neither sets it alone nor raises it above what the others measure."""
    tracker = _tenant_tracker(clock, tenants=3, min_samples=5)
    for _ in range(50):
        tracker.record_outcome("m", OK, 3_600_000.0, "mallory")
    assert tracker.latency_p50("m", 5) is None, "one tenant's reports alone make no estimate"
    for _ in range(5):
        tracker.record_outcome("m", OK, 800.0, "bob")
    assert tracker.latency_p50("m", 5) == 800.0
    for _ in range(5):
        tracker.record_outcome("m", OK, 900.0, "carol")
    assert tracker.latency_p50("m", 5) == 900.0


def test_closing_the_breaker_forgets_each_tenants_failures(clock: Clock) -> None:
    """After a half-open probe succeeds, the failures that opened the breaker no longer count
    for any tenant: one more failure from each does not re-open it."""
    tracker = _tenant_tracker(clock, tenants=3, consecutive_failures=2, cooldown_s=1.0)
    for tenant in ("alice", "bob"):
        for _ in range(2):
            tracker.record_outcome("m", ERROR, None, tenant)
    assert tracker.breaker_state("m") == "open"
    clock.advance(1.0)
    tracker.admit("m", 1)
    tracker.record_outcome("m", OK, 10.0, "carol")
    assert tracker.breaker_state("m") == "closed"
    tracker.record_outcome("m", ERROR, None, "alice")
    tracker.record_outcome("m", ERROR, None, "bob")
    assert tracker.breaker_state("m") == "closed"


@pytest.mark.parametrize(("kwargs", "field"), [({"min_tenants": 0}, "min_tenants")])
def test_invalid_min_tenants_names_the_field(kwargs: dict[str, object], field: str) -> None:
    """min_tenants below 1 raises ValueError naming the field."""
    with pytest.raises(ValueError, match=rf"^{field}: "):
        HealthSettings(**kwargs)  # type: ignore[arg-type]
