"""The merge rules of GetStats answers from several workers (banditroute.server.stats_merge)."""

from __future__ import annotations

import math

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from banditroute.server.stats_merge import (
    WorkerStats,
    decode_budget_own,
    encode_budget_own,
    merge_budgets,
    merge_health,
    merge_usage,
)
from banditroute.v1 import router_pb2 as pb

NAN = math.nan


def _usage(
    key: tuple[str, str], counts: tuple[int, int, float], means: tuple[float, float, float]
) -> pb.UsageStats:
    """A usage row as one worker reports it: (model, tenant), (calls, feedback, spend),
    (quality, p50, error rate), every feedback giving a quality and a latency; NaN: none did
    (the figure 0 and its count 0)."""
    (model, tenant), (calls, feedback, spend), (quality, p50, error_rate) = key, counts, means
    rated = 0 if math.isnan(quality) else feedback
    timed = 0 if math.isnan(p50) else feedback
    return pb.UsageStats(model=model, tenant=tenant, calls=calls, feedback_count=feedback,
                         spend_usd=spend, mean_quality=quality if rated else 0.0,
                         quality_count=rated, latency_p50_ms=p50 if timed else 0.0,
                         latency_p95_ms=2 * p50 if timed else 0.0, latency_count=timed,
                         error_rate=error_rate if feedback else 0.0)  # fmt: skip


def test_usage_rows_sum_counts_and_weight_means_by_their_counts() -> None:
    """Counts and spend add up; quality, latency and error rate are weighted by the counts
    they summarise (quality_count, latency_count, feedback_count); a row only one worker has
    passes through; a figure over nothing is 0 with its count 0, merged too (never NaN);
    rows come back in summarise's order (per model, per tenant, both, total)."""
    w0 = [
        _usage(("m", ""), (3, 2, 0.2), (0.9, 100.0, 0.0)),
        _usage(("m", "t"), (3, 2, 0.2), (0.9, 100.0, 0.0)),
        _usage(("", ""), (3, 2, 0.2), (0.9, 100.0, 0.0)),
        _usage(("x", "t"), (1, 0, 0.0), (NAN, NAN, NAN)),
    ]
    w1 = [
        _usage(("", ""), (2, 1, 0.1), (0.3, 400.0, 1.0)),
        _usage(("m", "t"), (1, 1, 0.1), (0.3, 400.0, 1.0)),
        _usage(("x", "t"), (1, 0, 0.0), (NAN, NAN, NAN)),
    ]
    merged = merge_usage([w0, w1])
    assert [(r.model, r.tenant) for r in merged] == [("m", ""), ("m", "t"), ("x", "t"), ("", "")]
    both = merged[1]
    assert (both.calls, both.feedback_count) == (4, 3)
    assert (both.quality_count, both.latency_count) == (3, 3)
    assert both.spend_usd == pytest.approx(0.3)
    assert both.mean_quality == pytest.approx((2 * 0.9 + 0.3) / 3)
    assert both.latency_p50_ms == pytest.approx(200.0)
    assert both.latency_p95_ms == pytest.approx(400.0)
    assert both.error_rate == pytest.approx(1 / 3)
    assert merged[0] == w0[0]
    unreported = merged[2]
    assert (unreported.calls, unreported.feedback_count) == (2, 0)
    assert (unreported.quality_count, unreported.latency_count) == (0, 0)
    figures = (unreported.mean_quality, unreported.latency_p50_ms, unreported.latency_p95_ms)
    assert (*figures, unreported.error_rate) == (0.0, 0.0, 0.0, 0.0)
    assert merged[3].calls == 5


def test_usage_latency_is_weighted_by_the_reports_that_gave_one() -> None:
    """Latency percentiles merge weighted by latency_count, not feedback_count: a worker whose
    feedback mostly came without a latency counts for the reports that had one, and one
    whose reports gave none (p50 0, latency_count 0) does not pull the figure to 0."""
    w0 = pb.UsageStats(model="m", feedback_count=10, latency_p50_ms=100.0, latency_count=1)
    w1 = pb.UsageStats(model="m", feedback_count=2, latency_p50_ms=400.0, latency_count=2)
    w2 = pb.UsageStats(model="m", feedback_count=50, latency_p50_ms=0.0, latency_count=0)
    (merged,) = merge_usage([[w0], [w1], [w2]])
    assert merged.latency_count == 3
    assert merged.latency_p50_ms == pytest.approx((100.0 + 2 * 400.0) / 3)


def test_health_takes_the_worst_state_and_weights_by_recent_requests() -> None:
    """open beats half_open beats closed; counts add up; the error rate is weighted by
    requests in the last minute, equally when nobody routed the model; latencies by
    latency_count (the largest worker's is the merged one: every worker's window holds the
    server's outcomes), 0 with latency_count 0 when no worker has one (never NaN)."""
    w0 = [
        pb.ModelHealth(model="a", state="closed", error_rate=0.0, latency_p50_ms=100.0,
                       latency_p95_ms=300.0, latency_count=30, requests_last_minute=30,
                       in_flight=2),
        pb.ModelHealth(model="b", state="half_open", error_rate=0.5, requests_last_minute=0,
                       in_flight=0),
    ]  # fmt: skip
    w1 = [
        pb.ModelHealth(model="a", state="open", error_rate=1.0, latency_p50_ms=500.0,
                       latency_p95_ms=700.0, latency_count=10, requests_last_minute=10,
                       in_flight=1),
        pb.ModelHealth(model="b", state="closed", error_rate=0.1, requests_last_minute=0,
                       in_flight=0),
    ]  # fmt: skip
    a, b = merge_health([w0, w1])
    assert (a.model, a.state, a.requests_last_minute, a.in_flight) == ("a", "open", 40, 3)
    assert a.error_rate == pytest.approx(10 / 40)
    assert a.latency_p50_ms == pytest.approx((30 * 100 + 10 * 500) / 40)
    assert a.latency_p95_ms == pytest.approx((30 * 300 + 10 * 700) / 40)
    assert a.latency_count == 30
    assert (b.state, b.error_rate) == ("half_open", pytest.approx(0.3))
    assert (b.latency_p50_ms, b.latency_p95_ms, b.latency_count) == (0.0, 0.0, 0)


def _budget(spend: float, requests: int, multiplier: float, start: int = 1000) -> pb.BudgetStatus:
    return pb.BudgetStatus(
        tenant="t", period="day", period_start=Timestamp(seconds=start), spend_usd=spend,
        limit_usd=5.0, target_usd_per_request=0.01,
        mean_cost_usd=spend / requests if requests else 0.0, pacing_multiplier=multiplier,
    )  # fmt: skip


def _worker(status: pb.BudgetStatus, requests: int | None) -> WorkerStats:
    """A worker whose own figures are its status' spend and ``requests`` (unknown if None)."""
    known = {} if requests is None else {"t": (status.spend_usd, requests)}
    return WorkerStats(pb.GetStatsResponse(budgets=[status]), known)


def test_budgets_sum_spend_and_recompute_mean_cost_from_request_counts() -> None:
    """Spend adds up; the mean cost is total spend over total requests (a worker with no
    spend still counts its requests); the multiplier is request-weighted; configured figures
    are kept."""
    parts = [_worker(_budget(0.3, 10, 2.0), 10), _worker(_budget(0.0, 30, 0.0), 30)]
    (merged,) = merge_budgets(parts)
    assert merged.spend_usd == pytest.approx(0.3)
    assert merged.mean_cost_usd == pytest.approx(0.3 / 40)
    assert merged.pacing_multiplier == pytest.approx(0.5)
    assert (merged.period, merged.limit_usd, merged.target_usd_per_request) == ("day", 5.0, 0.01)


def test_budgets_derive_requests_without_counts_and_drop_a_previous_period() -> None:
    """Without a request count a worker's is spend / mean cost; figures of an earlier period
    (read just before it rolled over) are left out."""
    (merged,) = merge_budgets([
        _worker(_budget(0.2, 4, 1.0), None),
        _worker(_budget(0.6, 4, 3.0), 4),
        _worker(_budget(9.0, 90, 9.0, start=0), 90),
    ])  # fmt: skip
    assert merged.spend_usd == pytest.approx(0.8)
    assert merged.mean_cost_usd == pytest.approx(0.1)
    assert merged.pacing_multiplier == pytest.approx(2.0)
    assert merged.period_start.seconds == 1000


def test_budgets_add_up_own_spend_not_the_shared_views() -> None:
    """Workers that exchanged spend each report the other's in spend_usd; the total adds up
    their own figures only."""
    shared = _budget(0.5, 10, 1.0)  # each worker sees 0.2 + 0.3 after a merge round
    (merged,) = merge_budgets([
        WorkerStats(pb.GetStatsResponse(budgets=[shared]), {"t": (0.2, 4)}),
        WorkerStats(pb.GetStatsResponse(budgets=[shared]), {"t": (0.3, 6)}),
    ])  # fmt: skip
    assert merged.spend_usd == pytest.approx(0.5)
    assert merged.mean_cost_usd == pytest.approx(0.05)


def test_budget_own_figures_round_trip_through_metadata() -> None:
    """The own figures a worker sends back decode to the same mapping; junk decodes to
    nothing and malformed entries are left out."""
    value = encode_budget_own({"acme": (0.25, 3), "beta": (0.0, 0)})
    key = "x-banditroute-budget-own-bin"
    decoded = decode_budget_own([("other", "x"), (key, value)])
    assert decoded == {"acme": (0.25, 3), "beta": (0.0, 0)}
    assert decode_budget_own([(key, b"not json")]) == {}
    assert decode_budget_own([(key, b'{"a": [1.0, 2], "b": ["x", 1], "c": [1.0]}')]) == {
        "a": (1.0, 2)
    }
    assert decode_budget_own(None) == {}


def test_usage_quality_is_weighted_by_the_reports_that_gave_one() -> None:
    """mean_quality merges weighted by quality_count, not feedback_count: a worker whose
    feedback mostly came without a quality counts for the reports that had one."""
    w0 = pb.UsageStats(model="m", feedback_count=10, mean_quality=0.9, quality_count=1)
    w1 = pb.UsageStats(model="m", feedback_count=2, mean_quality=0.3, quality_count=2)
    (merged,) = merge_usage([[w0], [w1]])
    assert merged.quality_count == 3
    assert merged.mean_quality == pytest.approx((0.9 + 2 * 0.3) / 3)
