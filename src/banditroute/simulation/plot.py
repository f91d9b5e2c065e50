"""Plots of a simulation: learning curves and the cost-quality plane (matplotlib, Agg, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from banditroute.simulation.runner import SeedTrace


def _windowed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter windows at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    result: np.ndarray = (cumulative[ends] - cumulative[starts]) / (ends - starts)
    return result


def plot_run(summary: dict[str, Any], traces: Sequence[SeedTrace], path: Path) -> None:
    """Write a PNG: windowed quality and cost along the stream, and the cost-quality plane
    with every single model, the per-prompt oracle, the best fixed model and the router."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(traces[0].order)
    window = max(20, n // 20)
    steps = np.arange(1, n + 1)
    fig, axes = plt.subplots(1, 3, figsize=(19, 5.4), width_ratios=(1, 1, 1.15))
    quality_ax, cost_ax, plane_ax = axes
    budget = summary["budget_usd"]
    best = summary["best_fixed"]
    for ax, attr, label in (
        (quality_ax, "quality", "quality"),
        (cost_ax, "cost_usd", "cost (USD / request)"),
    ):
        curves = np.array([_windowed(getattr(t, attr), window) for t in traces])
        ax.fill_between(steps, curves.min(axis=0), curves.max(axis=0), alpha=0.25, lw=0)
        ax.plot(steps, curves.mean(axis=0), lw=1.6, label=f"router ({summary['policy']})")
        ax.axhline(
            best[attr], color="tab:green", ls="--", lw=1, label=f"best fixed: {best['model']}"
        )
        ax.axhline(summary["oracle"][attr], color="tab:purple", ls=":", lw=1, label="oracle")
        ax.axvline(n // 2, color="grey", lw=0.6)
        ax.set_xlabel("prompts streamed")
        ax.set_ylabel(f"{label}, trailing mean of {window}")
        ax.grid(alpha=0.3)
    if budget is not None:
        cost_ax.axhline(budget, color="tab:red", lw=1, label="budget")
    cost_ax.set_yscale("log")
    settled = min(window, n - 1)  # skip the warm-up of the window, if the stream is longer
    quality_ax.set_ylim(bottom=max(0.0, min(best["quality"], float(np.min(
        [_windowed(t.quality, window)[settled:].min() for t in traces]
    ))) - 0.1))  # fmt: skip
    quality_ax.set_title("quality along the stream (band: min-max over seeds)")
    cost_ax.set_title("cost along the stream")
    quality_ax.legend(fontsize=8, loc="lower right")
    cost_ax.legend(fontsize=8, loc="upper right")

    for model, entry in summary["models"].items():
        plane_ax.scatter(entry["cost_usd"], entry["quality"], color="grey", s=25)
        plane_ax.annotate(
            model.rsplit("/", 1)[-1], (entry["cost_usd"], entry["quality"]), fontsize=7,
            xytext=(3, 3), textcoords="offset points",
        )  # fmt: skip
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
    plane_ax.set_xlabel("mean cost (USD / request, log)")
    plane_ax.set_ylabel("mean quality")
    plane_ax.set_title("cost-quality plane")
    plane_ax.grid(alpha=0.3)
    plane_ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(
        f"{summary['outcomes']}: {summary['prompts']} prompts x {summary['seeds']} seeds",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
