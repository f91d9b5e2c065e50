"""Plots of a simulation: learning curves and the cost-quality plane (matplotlib, Agg, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from banditroute.simulation.runner import SeedTrace

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _windowed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter windows at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    result: np.ndarray = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return result


def strongest_model(summary: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The single model of highest mean quality (ties: the cheaper): the ceiling a user
    compares a router with, whatever the objective or budget made the best fixed model."""
    models: dict[str, dict[str, Any]] = summary["models"]
    return max(models.items(), key=lambda kv: (kv[1]["quality"], -kv[1]["cost_usd"]))


def run_figure(summary: dict[str, Any], traces: Sequence[SeedTrace]) -> Figure:
    """The figure :func:`plot_run` writes: windowed quality and cost along the stream against
    the strongest single model, the best fixed model and the oracle, and the cost-quality
    plane with every single model (labels placed where they overlap nothing; those with no
    room are listed under the plane), the per-prompt oracle, the best fixed model and the
    router. Log axes carry plain-number ticks that do not pile up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from banditroute.plotting import annotate_points, log_ticks, outside_legend

    n = len(traces[0].order)
    window = max(20, n // 20)
    steps = np.arange(1, n + 1)
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.6), width_ratios=(1, 1, 1.15), dpi=110)
    quality_ax, cost_ax, plane_ax = axes
    budget = summary["budget_usd"]
    best = summary["best_fixed"]
    top_name, top = strongest_model(summary)
    also = " (also best fixed)" if best["model"] == top_name else ""
    top_label = f"strongest model{also}: {top_name}"
    cost_range: list[float] = []
    for ax, attr, label in (
        (quality_ax, "quality", "quality"),
        (cost_ax, "cost_usd", "cost (USD / request)"),
    ):
        curves = np.array([_windowed(getattr(t, attr), window) for t in traces])
        ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), alpha=0.25, lw=0)
        ax.plot(steps, curves.mean(axis=0), lw=1.6, label=f"router ({summary['policy']})")
        ax.axhline(top[attr], color="tab:red", ls="-.", lw=1, label=top_label)
        if best["model"] != top_name:
            ax.axhline(
                best[attr], color="tab:green", ls="--", lw=1, label=f"best fixed: {best['model']}"
            )
        ax.axhline(summary["oracle"][attr], color="tab:purple", ls=":", lw=1, label="oracle")
        ax.axvline(n // 2, color="grey", lw=0.6)
        ax.set_xlabel("prompts streamed")
        ax.set_ylabel(f"{label}, trailing mean of {window}")
        ax.grid(alpha=0.3)
        if attr == "cost_usd":
            cost_range = [float(curves.min()), float(curves.max()), top[attr], best[attr],
                          summary["oracle"][attr]]  # fmt: skip
    if budget is not None:
        cost_ax.axhline(budget, color="tab:red", lw=1, label="budget")
        cost_range.append(budget)
    cost_ax.set_yscale("log")
    positive = [c for c in cost_range if c > 0]
    if positive:
        log_ticks(cost_ax.yaxis, min(positive), max(positive))
    settled = min(window, n - 1)  # skip the warm-up of the window, if the stream is longer
    low = min(best["quality"], float(np.min(
        [_windowed(t.quality, window)[settled:].min() for t in traces]
    )))  # fmt: skip
    high = max(top["quality"], summary["oracle"]["quality"], float(quality_ax.get_ylim()[1]))
    quality_ax.set_ylim(max(0.0, low - 0.1), min(1.05, high + 0.02))
    quality_ax.set_title("quality along the stream (band: min-max over seeds)")
    cost_ax.set_title("cost along the stream")
    quality_ax.legend(fontsize=8, loc="lower right")
    cost_ax.legend(fontsize=8, loc="upper right")

    models = summary["models"]
    plane_ax.scatter([e["cost_usd"] for e in models.values()],
                     [e["quality"] for e in models.values()], color="grey", s=25)  # fmt: skip
    oracle = summary["oracle"]
    plane_ax.scatter(oracle["cost_usd"], oracle["quality"], marker="*", s=160, color="tab:purple",
                     label="per-prompt oracle")  # fmt: skip
    plane_ax.scatter(best["cost_usd"], best["quality"], marker="s", s=60, facecolors="none",
                     edgecolors="tab:green", label=f"best fixed: {best['model']}")  # fmt: skip
    seeds = summary.get("per_seed", [])
    plane_ax.scatter([s["cost_usd"] for s in seeds], [s["quality"] for s in seeds], s=14,
                     color="tab:blue", alpha=0.5, label="router, each seed")  # fmt: skip
    plane_ax.scatter(summary["cost_usd"], summary["quality"], marker="D", s=70, color="tab:blue",
                     label="router, mean")  # fmt: skip
    plane_ax.scatter(summary["cost_usd_last_half"], summary["quality_last_half"], marker="D",
                     s=70, facecolors="none", edgecolors="tab:blue",
                     label="router, last half")  # fmt: skip
    if budget is not None:
        plane_ax.axvline(budget, color="tab:red", lw=1, label="budget")
    plane_ax.set_xscale("log")
    xs = [e["cost_usd"] for e in models.values()] + [oracle["cost_usd"], summary["cost_usd"]]
    xs = [x for x in xs if x > 0]
    if xs:
        # Half a decade of room either side, so a label fits beside the outermost points.
        plane_ax.set_xlim(min(xs) / 3, max(xs) * 3)
        log_ticks(plane_ax.xaxis, min(xs) / 3, max(xs) * 3)
    plane_ax.margins(y=0.12)
    plane_ax.set_xlabel("mean cost (USD / request, log)")
    plane_ax.set_ylabel("mean quality")
    plane_ax.set_title("cost-quality plane")
    plane_ax.grid(alpha=0.3)
    outside_legend(plane_ax, fontsize=7)
    fig.suptitle(
        f"{summary['outcomes']}: {summary['prompts']} prompts x {summary['seeds']} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    marks = [(oracle["cost_usd"], oracle["quality"]), (summary["cost_usd"], summary["quality"]),
             (summary["cost_usd_last_half"], summary["quality_last_half"])]  # fmt: skip
    unplaced = annotate_points(
        plane_ax,
        [(e["cost_usd"], e["quality"], m.rsplit("/", 1)[-1]) for m, e in models.items()],
        markers=marks + [(s["cost_usd"], s["quality"]) for s in seeds],
        fontsize=7,
    )
    if unplaced:
        outside_legend(plane_ax, unplaced, fontsize=7)
    return fig


def plot_run(summary: dict[str, Any], traces: Sequence[SeedTrace], path: Path) -> None:
    """Write :func:`run_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = run_figure(summary, traces)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi="figure")
    finally:
        plt.close(fig)
