"""Synthetic inputs for the plots (few and many models, buckets, settings) and the structural
checks the plot tests share: overlapping labels, tick labels and line colours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure

from banditroute.evaluation.intervals import Interval
from banditroute.evaluation.logdata import LogCounts
from banditroute.evaluation.tune import TunePoint, TuneResult, pareto_frontier, recommend
from banditroute.objectives import Objective
from banditroute.plotting import renderer, text_overlaps
from banditroute.simulation.runner import SeedTrace
from banditroute.usage import BucketStats, ModelTenantStats, UsageReport

MODEL_NAMES = (
    "openai/gpt-4-1106-preview", "openai/gpt-3.5-turbo-1106", "anthropic/claude-2",
    "anthropic/claude-instant-v1", "anthropic/claude-v1", "mistralai/mixtral-8x7b-chat",
    "mistralai/mistral-7b-chat", "meta/llama-2-70b-chat", "meta/code-llama-instruct-34b-chat",
    "zero-one-ai/Yi-34B-Chat", "WizardLM/WizardLM-13B-V1.2", "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "meta/llama-3-8b-instruct",
)  # fmt: skip
T0 = datetime(2026, 12, 5, 14, tzinfo=UTC)


# -- checks -------------------------------------------------------------------------------------
def overlapping_texts(fig: Figure, ax: Axes) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts in ``ax`` (annotations included) whose boxes, as
    the figure's renderer draws them, overlap."""
    measure = renderer(fig)
    texts = [t for t in ax.texts if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(measure) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text()) for i, j in text_overlaps(boxes)]


def overlapping_ticks(fig: Figure, axis: Axis) -> list[tuple[str, str]]:
    """Pairs of the axis's drawn tick labels (major and minor) whose boxes overlap."""
    fig.canvas.draw()
    measure = renderer(fig)
    labels = [
        t
        for t in axis.get_ticklabels(which="both")
        if t.get_visible() and t.get_text() and _within(axis, t.get_position())
    ]
    boxes = [t.get_window_extent(measure) for t in labels]
    return [(labels[i].get_text(), labels[j].get_text()) for i, j in text_overlaps(boxes)]


def _within(axis: Axis, position: tuple[float, float]) -> bool:
    low, high = sorted(axis.get_view_interval())
    value = position[0] if axis.axis_name == "x" else position[1]
    return bool(low <= value <= high)


def outside_axes(fig: Figure, ax: Axes) -> list[str]:
    """Texts of ``ax`` that reach outside its frame (clipped or spilling over a neighbour)."""
    measure = renderer(fig)
    frame = ax.get_window_extent(measure)
    out = []
    for t in ax.texts:
        box = t.get_window_extent(measure)
        if box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1:
            out.append(t.get_text())
    return out


# -- usage reports -------------------------------------------------------------------------------
def usage_report(n_models: int, hours: list[int], bucket: str = "hour") -> UsageReport:
    """A report with ``n_models`` models served in every bucket ``T0 + hours[i]`` hours, an
    error rate of 5% in every third bucket and 0 elsewhere."""
    models = MODEL_NAMES[:n_models] if n_models <= len(MODEL_NAMES) else [
        f"vendor/model-{i}" for i in range(n_models)
    ]  # fmt: skip

    def row(model: str | None, at: datetime, calls: int, error: float) -> BucketStats:
        return BucketStats(model, None, calls, calls, 0.001 * calls, 0.7, 300.0 + calls,
                           900.0 + calls, error, bucket=at)  # fmt: skip

    series = []
    for h in hours:
        at = T0 + timedelta(hours=h)
        series += [row(m, at, 5 + i + h % 7, 0.0) for i, m in enumerate(models)]
        series.append(row(None, at, 50, 0.05 if h % 3 == 0 else 0.0))
    summary = tuple(ModelTenantStats(m, None, 1, 1, 0.1, 0.5, 1.0, 2.0, 0.0) for m in models)
    total = ModelTenantStats(None, None, 1, 1, 0.1, 0.5, 1.0, 2.0, 0.0)
    return UsageReport(bucket, None, None, (*summary, total), tuple(series))


# -- tune results --------------------------------------------------------------------------------
def _point(label: str, kind: Any, q: tuple[float, float, float], cost: float) -> TunePoint:
    return TunePoint(
        label, kind, {}, Interval(q[1], q[0], q[2], 0.95),
        Interval(cost, 0.7 * cost, 1.3 * cost, 0.95), Interval(500.0, 400.0, 600.0, 0.95),
        ess=10.0, max_weight=5.0,
    )  # fmt: skip


def tune_result(n_settings: int, n_references: int, seed: int = 0) -> TuneResult:
    """A sweep of ``n_settings`` settings along a cost/quality trade-off (two intervals
    reaching outside [0, 1], as a high-variance IPS/DR interval does) and ``n_references``
    fixed-model references spread over three decades of cost."""
    rng = np.random.default_rng(seed)
    weights = (0, 10, 25, 50, 100, 200, 400, 1000, 1500, 2000, 3000, 5000)
    points = []
    for i in range(n_settings):
        cost = 0.002 * np.exp(-0.35 * i) + rng.uniform(0, 2e-4)
        q = 0.8 - 0.02 * i + rng.normal(0, 0.01)
        low = q - (0.95 if i == 1 else 0.1)
        high = q + (0.95 if i == 2 else 0.1)
        label = f"cost={weights[i % len(weights)]},latency={i // len(weights)}"
        points.append(_point(label, "sweep", (low, q, high), float(cost)))
    flags = pareto_frontier(
        [p.cost_usd.estimate for p in points], [p.quality.estimate for p in points]
    )
    points = [TunePoint(**{**vars(p), "frontier": f}) for p, f in zip(points, flags, strict=True)]
    names = ["logged", *(f"fixed:{m}" for m in MODEL_NAMES)]
    for name in names[:n_references]:
        cost = 10 ** rng.uniform(-4.5, -1.8)
        q = float(np.clip(0.8 + 0.1 * np.log10(cost) + rng.normal(0, 0.03), 0.05, 0.95))
        points.append(_point(name, "reference", (q - 0.2, q, q + 0.2), float(cost)))
    chosen, target, reason = recommend(points, quality_share=None, max_cost=None)
    return TuneResult(
        "log.duckdb", Objective("balanced", 1.0, 50.0, 0.0), "costaware",
        LogCounts(100, 0, 0, 100, 0, 0), 50, 50, tuple(points), target, chosen, reason, 0.95,
        "bootstrap",
    )  # fmt: skip


# -- simulation runs -----------------------------------------------------------------------------
def simulation_run(
    n_models: int, *, best: int = 1, steps: int = 400, seeds: int = 2
) -> tuple[dict[str, Any], list[SeedTrace]]:
    """A simulation summary and traces: ``n_models`` models whose costs span about 1.5e-4 to
    6e-3 USD (one and a half decades, as on MMLU: the log axis labels its minor ticks),
    the first of highest quality, ``best`` the best fixed model."""
    rng = np.random.default_rng(n_models)
    names = MODEL_NAMES[:n_models]
    costs = np.geomspace(6e-3, 1.5e-4, n_models)
    quality = np.linspace(0.805, 0.62, n_models) + rng.normal(0, 0.004, n_models)
    quality[0] = 0.805
    models = {
        m: {"quality": float(q), "cost_usd": float(c)}
        for m, q, c in zip(names, quality, costs, strict=True)
    }
    traces = []
    for seed in range(seeds):
        r = np.random.default_rng(seed)
        zeros = np.zeros(steps)
        trace = SeedTrace(seed, np.arange(steps), zeros.astype(np.int64), np.ones((steps, 1)),
                          r.binomial(1, 0.7, steps).astype(float), r.uniform(1e-3, 2e-3, steps),
                          zeros, zeros, np.zeros((steps, 1)), steps, 0, 0.0)  # fmt: skip
        traces.append(trace)
    fixed = names[min(best, n_models - 1)]
    summary = {
        "outcomes": "routellm_mmlu.parquet", "prompts": steps, "seeds": seeds,
        "policy": "costaware", "budget_usd": 1.4e-3,
        "best_fixed": {"model": fixed, **models[fixed]},
        "oracle": {"quality": 0.86, "cost_usd": 1.2e-3},
        "models": models, "quality": 0.707, "cost_usd": 1.45e-3,
        "quality_last_half": 0.705, "cost_usd_last_half": 1.43e-3,
        "per_seed": [{"quality": 0.707 + 0.003 * s, "cost_usd": 1.45e-3} for s in range(seeds)],
    }  # fmt: skip
    return summary, traces


def distinct_line_styles(ax: Axes) -> set[tuple[Any, ...]]:
    """The (colour, line style) pairs of the lines in ``ax``."""
    from matplotlib.colors import to_rgba

    return {(to_rgba(line.get_color()), line.get_linestyle()) for line in ax.get_lines()}
