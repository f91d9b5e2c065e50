"""Usage analytics over a decision log: calls, spend, quality, latency and errors.

Everything is computed in DuckDB over the ``decisions`` and ``feedback`` views (see
:func:`banditroute.store.reader.open_log`), in one scan with ``GROUPING SETS``:

- a decision is attributed to the model that *served* it: ``feedback.model`` when feedback
  arrived (a fallback that served is credited, not the model first chosen), else the chosen
  ``decisions.model`` (also for a feedback row naming no model, feedback a cluster replica
  accepted for the trainer: :func:`~banditroute.store.schema.served_model`); a decision
  whose feedback names two models (a failed call, then a fallback) counts as a call of
  each, and once in the totals;
- only feedback that counted is counted (:data:`~banditroute.store.schema.FEEDBACK_RANK`):
  per decision and served model the first report, and every ``DEFERRED`` one (they all enter
  the combined reward); a repeated report (``IGNORED_DUPLICATE``, a fallback reported twice)
  adds nothing;
- ``calls``: distinct decisions; ``feedback``: the feedback rows that counted; ``spend_usd``:
  the sum of the reported ``cost_usd`` of each served model's first report (one call costs
  once, as the tenant's budget is charged; 0 if none was reported); ``mean_quality``: the mean
  reported quality over the ``quality_count`` rows that gave one;
  ``latency_p50_ms``/``latency_p95_ms``: ``quantile_cont`` of the ``latency_count``
  reported latencies;
  ``error_rate``: the share of those rows whose status is not ``OK``. Means, quantiles and
  rates are ``None`` where there is nothing to average;
- ``since``/``until`` select decisions by their time (``since <= time < until``); their
  feedback counts wherever it arrived; time buckets are UTC-aligned and keyed by the
  decision's time.

:func:`summarise` is the per-model/per-tenant part alone, for a stats RPC.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from banditroute.choices import BUCKETS
from banditroute.errors import InvalidArgument
from banditroute.store.schema import FEEDBACK_RANK, served_model

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "BUCKETS",
    "BucketStats",
    "ModelTenantStats",
    "UsageReport",
    "format_table",
    "plot_usage",
    "summarise",
    "usage_figure",
    "usage_report",
]

TimeArg = datetime | float | None
"""A bound: an aware datetime (a naive one is read as UTC), epoch seconds, or None."""


@dataclass(frozen=True)
class ModelTenantStats:
    """Usage of one model by one tenant; ``None`` in ``model`` or ``tenant`` means "all"."""

    model: str | None
    tenant: str | None
    calls: int
    feedback: int
    spend_usd: float
    mean_quality: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    error_rate: float | None
    quality_count: int = field(default=0, kw_only=True)
    """Counted feedback reports that gave a quality (what ``mean_quality`` averages)."""
    latency_count: int = field(default=0, kw_only=True)
    """Counted feedback reports that gave a latency (what the percentiles are over)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values for JSON (a bucket as ISO 8601 text; a NaN or infinite figure, which
        a log written by another tool can produce, as ``None``: JSON has no such numbers)."""
        out = dataclasses.asdict(self)
        if isinstance(out.get("bucket"), datetime):
            out["bucket"] = out["bucket"].isoformat()
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out


@dataclass(frozen=True)
class BucketStats(ModelTenantStats):
    """:class:`ModelTenantStats` within one time bucket starting at ``bucket`` (UTC)."""

    bucket: datetime


@dataclass(frozen=True)
class UsageReport:
    """Usage over ``[since, until)``: ``summary`` over the whole range (per model and tenant,
    per model, per tenant, and the total) and ``series`` per time bucket (the same groupings)."""

    bucket: str
    since: datetime | None
    until: datetime | None
    summary: tuple[ModelTenantStats, ...]
    series: tuple[BucketStats, ...]

    @property
    def empty(self) -> bool:
        """True when no decision falls in the range."""
        return not self.summary

    def total(self) -> ModelTenantStats | None:
        """The row over all models and tenants (None for an empty report)."""
        return next((s for s in self.summary if s.model is None and s.tenant is None), None)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain values for JSON."""
        return {
            "bucket": self.bucket,
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "summary": [s.to_dict() for s in self.summary],
            "series": [s.to_dict() for s in self.series],
        }


def _as_datetime(value: TimeArg, arg: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not math.isfinite(value):
        raise InvalidArgument(f"{arg}: must be a finite time, got {value!r}", field=arg)
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        # Seconds as a float round the last nanosecond of 9999 (Timestamp's largest value)
        # up to year 10000, which a datetime cannot hold.
        raise InvalidArgument(
            f"{arg}: {value!r} seconds is outside 0001-01-01..9999-12-31 (UTC)", field=arg
        ) from None


_SUMMARY_SETS = "(model, tenant), (model), (tenant), ()"
_SERIES_SETS = "(b, model, tenant), (b, model), (b, tenant), (b)"

_QUERY = """
WITH d AS (
    SELECT decision_id, tenant, model AS chosen, time FROM decisions
    WHERE (?::DOUBLE IS NULL OR time >= to_timestamp(?::DOUBLE))
      AND (?::DOUBLE IS NULL OR time < to_timestamp(?::DOUBLE))
      {tenant_filter}
), f AS (
    SELECT *, {rank} AS n FROM (
        SELECT feedback.* REPLACE ({served} AS model)
        FROM feedback JOIN d USING (decision_id)
    )
), j AS (
    SELECT d.decision_id, d.tenant, coalesce(f.model, d.chosen) AS model,
           floor(epoch(d.time) / {width}) * {width} AS b,
           f.decision_id IS NOT NULL AS has_feedback,
           f.quality, CASE WHEN f.n = 1 THEN f.cost_usd END AS cost_usd, f.latency_ms, f.status
    FROM d LEFT JOIN f ON f.decision_id = d.decision_id
        AND (f.n = 1 OR f.disposition = 'DEFERRED')
)
SELECT {bucket_columns}, grouping(model) AS g_model, grouping(tenant) AS g_tenant,
       model, tenant,
       count(DISTINCT decision_id) AS calls,
       count(*) FILTER (WHERE has_feedback) AS feedback,
       coalesce(sum(cost_usd), 0.0) AS spend_usd,
       avg(quality) AS mean_quality,
       count(quality) AS quality_count,
       count(latency_ms) AS latency_count,
       quantile_cont(latency_ms, [0.5, 0.95]) AS latency_q,
       avg(CASE WHEN has_feedback THEN (status IS DISTINCT FROM 'OK')::DOUBLE END)
           AS error_rate
FROM j
GROUP BY GROUPING SETS ({sets})
"""


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _query(
    con: duckdb.DuckDBPyConnection,
    *,
    series: bool,
    width: int,
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
) -> list[dict[str, Any]]:
    bucket_columns = "grouping(b) AS g_bucket, b" if series else "1 AS g_bucket, NULL AS b"
    sql = _QUERY.format(
        sets=f"{_SUMMARY_SETS}, {_SERIES_SETS}" if series else _SUMMARY_SETS,
        bucket_columns=bucket_columns,
        width=width,
        rank=FEEDBACK_RANK,
        served=served_model("feedback.model", "d.chosen"),
        tenant_filter="AND tenant = ?" if tenant is not None else "",
    )
    params: list[Any] = [_epoch(since), _epoch(since), _epoch(until), _epoch(until)]
    if tenant is not None:
        params.append(tenant)
    rows: list[dict[str, Any]] = con.sql(sql, params=params).to_arrow_table().to_pylist()
    # An empty input still yields the grand-total row (calls = 0): drop it.
    return [r for r in rows if r["calls"]]


def _stats_fields(row: dict[str, Any]) -> dict[str, Any]:
    q = row["latency_q"]
    return {
        "model": None if row["g_model"] else row["model"],
        "tenant": None if row["g_tenant"] else row["tenant"],
        "calls": int(row["calls"]),
        "feedback": int(row["feedback"]),
        "spend_usd": float(row["spend_usd"]),
        "mean_quality": row["mean_quality"],
        "quality_count": int(row["quality_count"]),
        "latency_count": int(row["latency_count"]),
        "latency_p50_ms": None if q is None else q[0],
        "latency_p95_ms": None if q is None else q[1],
        "error_rate": row["error_rate"],
    }


def _order(s: ModelTenantStats) -> tuple[Any, ...]:
    # per model, per tenant, per model and tenant, then the total
    level = {(False, True): 0, (True, False): 1, (False, False): 2, (True, True): 3}
    return (level[(s.model is None, s.tenant is None)], s.model or "", s.tenant or "")


def summarise(
    con: duckdb.DuckDBPyConnection,
    since: TimeArg = None,
    until: TimeArg = None,
    *,
    tenant: str | None = None,
) -> list[ModelTenantStats]:
    """Usage per model, per tenant, per (model, tenant) and in total over ``[since, until)``,
    optionally for one ``tenant`` only; ordered in that order; empty if no decision matches."""
    rows = _query(
        con,
        series=False,
        width=BUCKETS["hour"],
        since=_as_datetime(since, "since"),
        until=_as_datetime(until, "until"),
        tenant=tenant,
    )
    return sorted((ModelTenantStats(**_stats_fields(r)) for r in rows), key=_order)


def usage_report(
    con: duckdb.DuckDBPyConnection,
    *,
    bucket: str = "hour",
    since: TimeArg = None,
    until: TimeArg = None,
    tenant: str | None = None,
) -> UsageReport:
    """The summary of :func:`summarise` and the same figures per ``bucket`` (``minute``,
    ``hour`` or ``day``), computed in one pass; InvalidArgument for an unknown bucket or
    ``since >= until``."""
    if bucket not in BUCKETS:
        raise InvalidArgument(
            f"bucket: must be one of {', '.join(BUCKETS)}, got {bucket!r}", field="bucket"
        )
    start, end = _as_datetime(since, "since"), _as_datetime(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidArgument(f"until: {end.isoformat()} is not after since", field="until")
    rows = _query(
        con,
        series=True,
        width=BUCKETS[bucket],
        since=start,
        until=end,
        tenant=tenant,
    )
    summary = sorted(
        (ModelTenantStats(**_stats_fields(r)) for r in rows if r["g_bucket"]), key=_order
    )
    series = sorted(
        (
            BucketStats(**_stats_fields(r), bucket=datetime.fromtimestamp(float(r["b"]), tz=UTC))
            for r in rows
            if not r["g_bucket"]
        ),
        key=lambda s: (s.bucket, *_order(s)),
    )
    return UsageReport(bucket, start, end, tuple(summary), tuple(series))


# -- presentation -------------------------------------------------------------------------------

_HEADER = ("model", "tenant", "calls", "feedback", "spend $", "quality", "p50 ms", "p95 ms",
           "errors")  # fmt: skip


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cells(s: ModelTenantStats, first: str | None = None) -> list[str]:
    return [
        first if first is not None else (s.model or "(all)"),
        s.tenant or "(all)",
        str(s.calls),
        str(s.feedback),
        f"{s.spend_usd:.4f}",
        _num(s.mean_quality, ".3f"),
        _num(s.latency_p50_ms, ".0f"),
        _num(s.latency_p95_ms, ".0f"),
        "-" if s.error_rate is None else f"{100 * s.error_rate:.1f}%",
    ]


def _render(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) if i >= 2 else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True)) if i > 0]  # fmt: skip
        return "  ".join([first, *rest]).rstrip()

    return "\n".join([title, line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_table(report: UsageReport) -> str:
    """Plain-text tables: per model, per tenant, per model and tenant, the total, and the total
    per time bucket."""
    if report.empty:
        return "no decisions in the selected range\n"
    groups: tuple[tuple[str, Callable[[ModelTenantStats], bool]], ...] = (
        ("by model", lambda s: s.model is not None and s.tenant is None),
        ("by tenant", lambda s: s.model is None and s.tenant is not None),
        ("by model and tenant", lambda s: s.model is not None and s.tenant is not None),
        ("total", lambda s: s.model is None and s.tenant is None),
    )
    sections = [
        _render(title, _HEADER, [_cells(s) for s in report.summary if keep(s)])
        for title, keep in groups
    ]
    totals = [s for s in report.series if s.model is None and s.tenant is None]
    header = (report.bucket + " (UTC)", *_HEADER[1:])
    sections.append(
        _render(
            f"by {report.bucket}",
            header,
            [_cells(s, s.bucket.strftime("%Y-%m-%d %H:%M")) for s in totals],
        )
    )
    return "\n\n".join(sections) + "\n"


def _with_gaps(
    times: Sequence[datetime], values: Sequence[float], width: int
) -> tuple[list[datetime], list[float]]:
    """The series with a NaN between two buckets that are not adjacent, so a line breaks
    where no decision was logged instead of drawing traffic that never happened."""
    out_t: list[datetime] = []
    out_v: list[float] = []
    for i, (time, value) in enumerate(zip(times, values, strict=True)):
        if i and (time - times[i - 1]).total_seconds() > width:
            out_t.append(times[i - 1] + (time - times[i - 1]) / 2)
            out_v.append(math.nan)
        out_t.append(time)
        out_v.append(value)
    return out_t, out_v


def _value(value: float | None) -> float:
    return math.nan if value is None else value


def usage_figure(report: UsageReport) -> Figure:
    """The figure :func:`plot_usage` writes: calls and spend per served model over time (one
    distinct style per model), and latency (p50, p95) with the error rate (all models). Lines
    break at buckets without decisions; the time axis spans the buckets plus half a bucket
    either side, however few there are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import dates, ticker

    from banditroute.plotting import series_styles

    width = BUCKETS[report.bucket]
    fig, axes = plt.subplots(3, 1, figsize=(12, 10), sharex=True, dpi=110)
    calls_ax, spend_ax, latency_ax = axes
    if report.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no decisions in the selected range", ha="center",
                    va="center", transform=ax.transAxes)  # fmt: skip
    per_model: dict[str, list[BucketStats]] = {}
    for s in report.series:
        if s.model is not None and s.tenant is None:
            per_model.setdefault(s.model, []).append(s)
    styles = series_styles(len(per_model))
    for style, (model, rows) in zip(styles, sorted(per_model.items()), strict=True):
        times = [r.bucket for r in rows]
        for ax, values in ((calls_ax, [float(r.calls) for r in rows]),
                           (spend_ax, [r.spend_usd for r in rows])):  # fmt: skip
            ax.plot(*_with_gaps(times, values, width), ms=3, lw=1.2, label=model,
                    **style.kwargs())  # fmt: skip
    totals = [s for s in report.series if s.model is None and s.tenant is None]
    times = [r.bucket for r in totals]
    p50 = _with_gaps(times, [_value(r.latency_p50_ms) for r in totals], width)
    p95 = _with_gaps(times, [_value(r.latency_p95_ms) for r in totals], width)
    errors = _with_gaps(times, [_value(r.error_rate) for r in totals], width)
    latency_ax.plot(*p50, "o-", ms=3, color="tab:blue", label="latency p50")
    latency_ax.plot(*p95, "s--", ms=3, color="tab:blue", label="latency p95")
    error_ax = latency_ax.twinx()
    error_ax.plot(*errors, "^-", ms=3, color="tab:red", label="error rate")
    error_ax.set_ylabel("error rate (share of feedback not OK)", color="tab:red")
    error_ax.yaxis.set_major_formatter(ticker.PercentFormatter(xmax=1.0))
    worst = max((e for e in errors[1] if math.isfinite(e)), default=0.0)
    # At least 0-1%: an all-OK period must not read as a scale of a few hundredths.
    error_ax.set_ylim(0.0, max(0.01, min(1.05, 1.15 * worst)))

    calls_ax.set_ylabel(f"calls per {report.bucket}")
    calls_ax.set_title(f"usage per {report.bucket} (UTC), by served model; gaps: no decisions")
    spend_ax.set_ylabel(f"spend per {report.bucket} (USD)")
    latency_ax.set_ylabel("latency (ms), all models")
    latency_ax.set_xlabel("time (UTC)")
    for ax in axes:
        ax.grid(alpha=0.3)
    if times:
        half = timedelta(seconds=width / 2)
        latency_ax.set_xlim(times[0] - half, times[-1] + half)
        locator = dates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
        latency_ax.xaxis.set_major_locator(locator)
        concise = dates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
        latency_ax.xaxis.set_major_formatter(concise)
    if per_model:
        calls_ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                        title="served model")  # fmt: skip
    if totals:
        handles = latency_ax.get_legend_handles_labels()
        extra = error_ax.get_legend_handles_labels()
        latency_ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=8,
                          loc="upper left", bbox_to_anchor=(1.08, 1.0))  # fmt: skip
    fig.tight_layout()
    return fig


def plot_usage(report: UsageReport, path: Path) -> None:
    """Write :func:`usage_figure` as a PNG. An empty report gives a figure saying so."""
    import matplotlib.pyplot as plt

    fig = usage_figure(report)
    try:
        fig.savefig(path, format="png", dpi="figure")
    finally:
        plt.close(fig)
