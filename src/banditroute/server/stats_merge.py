"""One GetStats answer for the whole server from the answers of its serving processes.

With ``server.workers`` > 1 every worker keeps its own log, model health and budgets (model
outcomes and budget spend are exchanged every merge round, admissions are not), so the worker a
GetStats reaches asks the others and merges their answers here (proto in, proto out).
Counts and sums add up exactly (a decision and its feedback live in one worker's log only);
the rest is combined as follows:

- usage, per (model, tenant) row (the per-model, per-tenant and total rows alike): each
  figure is the mean of the workers' figures weighted by the count it summarises, and the
  counts add up: ``mean_quality`` by ``quality_count`` and ``error_rate`` by
  ``feedback_count`` (both exact). Latency percentiles cannot be merged exactly from
  summaries: ``latency_p50_ms`` and ``latency_p95_ms`` are the means of the workers' p50s and
  p95s weighted by ``latency_count``, which lies between the workers' values but is not the
  percentile of the pooled latencies. A figure over no value is 0 with its count 0, on one
  worker and merged (never NaN, which JSON renders as the string "NaN");
- health, per model: the worst breaker ``state`` (open > half_open > closed: a model open on
  one worker is refused by that worker's routes); ``requests_last_minute`` and ``in_flight``
  summed; ``error_rate`` weighted by ``requests_last_minute`` (each worker's figures
  describe the traffic it routes now), equal weights when no worker routed the model in the
  last minute; latencies weighted by ``latency_count`` (0 when it is 0 everywhere), and
  ``latency_count`` the largest worker's (each worker's window holds every worker's outcomes);
- budgets, per tenant: the figures of the latest ``period_start`` only (a worker that read its
  status just before the period rolled over reports the previous period); ``spend_usd``
  summed; ``period``, ``limit_usd`` and ``target_usd_per_request`` as configured (the same on
  every worker); ``mean_cost_usd`` recomputed as total spend over total requests;
  ``pacing_multiplier`` is the request-weighted mean of the workers' multipliers (the cost
  weight the average request was routed with; equal weights before any request). Workers
  exchange their spend every merge round (so each one's hard cap holds for the server), so a
  worker's ``spend_usd`` already holds the others' (a round late): the totals add up each
  worker's own spend and requests, which come with its answer (:data:`BUDGET_OWN_KEY`);
  without them, its spend and spend / mean cost stand in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from banditroute.v1 import router_pb2 as pb

__all__ = [
    "BUDGET_OWN_KEY",
    "WorkerStats",
    "decode_budget_own",
    "encode_budget_own",
    "merge_budgets",
    "merge_health",
    "merge_stats",
    "merge_usage",
]

BUDGET_OWN_KEY = "x-banditroute-budget-own-bin"
"""Trailing metadata of a forwarded GetStats: the worker's own spend and request count per
tenant budget (its BudgetStatus also counts the other workers' spend, and has no request
count to merge mean_cost_usd with)."""

_STATE_RANK = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class WorkerStats:
    """One worker's GetStats answer and its own (spend, requests) per tenant budget."""

    response: pb.GetStatsResponse
    budget_own: Mapping[str, tuple[float, int]] = field(default_factory=dict)


def encode_budget_own(own: Mapping[str, tuple[float, int]]) -> bytes:
    """Own (spend, requests) by tenant as the value of :data:`BUDGET_OWN_KEY`."""
    return json.dumps(
        {k: [float(v[0]), int(v[1])] for k, v in own.items()}, sort_keys=True
    ).encode()


def _own_entry(value: Any) -> tuple[float, int] | None:
    if not (isinstance(value, list) and len(value) == 2):
        return None
    spend, requests = value
    if not isinstance(spend, int | float) or isinstance(spend, bool) or not math.isfinite(spend):
        return None
    if not isinstance(requests, int) or isinstance(requests, bool):
        return None
    return float(spend), requests


def decode_budget_own(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, tuple[float, int]]:
    """Own (spend, requests) by tenant from trailing metadata (empty when absent or
    unreadable; malformed entries are left out)."""
    for key, value in metadata or ():
        if key != BUDGET_OWN_KEY or not isinstance(value, bytes):
            continue
        try:
            decoded = json.loads(value)
        except ValueError:
            return {}
        if not isinstance(decoded, dict):
            return {}
        entries = {str(k): _own_entry(v) for k, v in decoded.items()}
        return {k: v for k, v in entries.items() if v is not None}
    return {}


def _mean(values: Iterable[tuple[float, float]]) -> float:
    """Mean of the finite values weighted by their weights (value, weight); equal weights when
    the finite values' weights sum to 0; NaN when there is no finite value."""
    pairs = [(v, max(w, 0.0)) for v, w in values if math.isfinite(v)]
    if not pairs:
        return math.nan
    total = sum(w for _, w in pairs)
    if total <= 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * w for v, w in pairs) / total


def _counted_mean(pairs: Iterable[tuple[float, int]]) -> float:
    """Mean of figures (value, count) weighted by the number of values each summarises; 0 when
    no figure summarises any (as a single worker reports it)."""
    counted = [(v, c) for v, c in pairs if c > 0]
    total = sum(c for _, c in counted)
    return math.fsum(v * c for v, c in counted) / total if total else 0.0


def _usage_order(row: pb.UsageStats) -> tuple[int, str, str]:
    # as banditroute.usage.summarise orders: per model, per tenant, per both, the total
    level = {(False, True): 0, (True, False): 1, (False, False): 2, (True, True): 3}
    return (level[(not row.model, not row.tenant)], row.model, row.tenant)


def merge_usage(parts: Sequence[Sequence[pb.UsageStats]]) -> list[pb.UsageStats]:
    """UsageStats rows of several workers -> one row per (model, tenant); see the module."""
    groups: dict[tuple[str, str], list[pb.UsageStats]] = {}
    for rows in parts:
        for row in rows:
            groups.setdefault((row.model, row.tenant), []).append(row)
    merged = []
    for (model, tenant), rows in groups.items():
        merged.append(
            pb.UsageStats(
                model=model,
                tenant=tenant,
                calls=sum(r.calls for r in rows),
                feedback_count=sum(r.feedback_count for r in rows),
                spend_usd=math.fsum(r.spend_usd for r in rows),
                mean_quality=_counted_mean((r.mean_quality, r.quality_count) for r in rows),
                quality_count=sum(r.quality_count for r in rows),
                latency_p50_ms=_counted_mean((r.latency_p50_ms, r.latency_count) for r in rows),
                latency_p95_ms=_counted_mean((r.latency_p95_ms, r.latency_count) for r in rows),
                latency_count=sum(r.latency_count for r in rows),
                error_rate=_counted_mean((r.error_rate, r.feedback_count) for r in rows),
            )
        )
    return sorted(merged, key=_usage_order)


def merge_health(parts: Sequence[Sequence[pb.ModelHealth]]) -> list[pb.ModelHealth]:
    """ModelHealth rows of several workers -> one row per model, by model id; see the module."""
    groups: dict[str, list[pb.ModelHealth]] = {}
    for rows in parts:
        for row in rows:
            groups.setdefault(row.model, []).append(row)
    merged = []
    for model in sorted(groups):
        rows = groups[model]
        weighted = [(r, float(r.requests_last_minute)) for r in rows]
        merged.append(
            pb.ModelHealth(
                model=model,
                state=max((r.state for r in rows), key=lambda s: _STATE_RANK.get(s, 2)),
                error_rate=_mean((r.error_rate, w) for r, w in weighted),
                latency_p50_ms=_counted_mean((r.latency_p50_ms, r.latency_count) for r in rows),
                latency_p95_ms=_counted_mean((r.latency_p95_ms, r.latency_count) for r in rows),
                # Every worker's window holds the server's outcomes (exchanged each round).
                latency_count=max(r.latency_count for r in rows),
                requests_last_minute=sum(r.requests_last_minute for r in rows),
                in_flight=sum(r.in_flight for r in rows),
                # Each worker's replica of the policy watches for drift on its own.
                drifts_detected=max(r.drifts_detected for r in rows),
            )
        )
    return merged


def _own(status: pb.BudgetStatus, known: Mapping[str, tuple[float, int]]) -> tuple[float, int]:
    """A worker's own (spend, requests), or what its status says when it did not tell."""
    own = known.get(status.tenant)
    if own is not None:
        return own
    derived = round(status.spend_usd / status.mean_cost_usd) if status.mean_cost_usd > 0 else 0
    return status.spend_usd, derived


def merge_budgets(parts: Sequence[WorkerStats]) -> list[pb.BudgetStatus]:
    """BudgetStatus rows of several workers -> one row per tenant (in first-seen order); see
    the module."""
    groups: dict[str, list[tuple[pb.BudgetStatus, tuple[float, int]]]] = {}
    for part in parts:
        for status in part.response.budgets:
            groups.setdefault(status.tenant, []).append((status, _own(status, part.budget_own)))
    merged = []
    for tenant, entries in groups.items():
        latest = max(s.period_start.ToNanoseconds() for s, _ in entries)
        current = [(s, o) for s, o in entries if s.period_start.ToNanoseconds() == latest]
        first = current[0][0]
        spend = math.fsum(o[0] for _, o in current)
        requests = sum(o[1] for _, o in current)
        merged.append(
            pb.BudgetStatus(
                tenant=tenant,
                period=first.period,
                period_start=first.period_start,
                spend_usd=spend,
                limit_usd=first.limit_usd,
                target_usd_per_request=first.target_usd_per_request,
                mean_cost_usd=spend / requests if requests else 0.0,
                pacing_multiplier=_mean((s.pacing_multiplier, float(o[1])) for s, o in current),
            )
        )
    return merged


def merge_stats(parts: Sequence[WorkerStats]) -> pb.GetStatsResponse:
    """GetStatsResponses of several workers -> one for the whole server."""
    return pb.GetStatsResponse(
        usage=merge_usage([p.response.usage for p in parts]),
        health=merge_health([p.response.health for p in parts]),
        budgets=merge_budgets(parts),
    )
