"""The simulate plot: the strongest single model as a reference on the quality panel, model
labels in the cost-quality plane that neither overlap nor leave it, and log-axis tick labels
that do not pile up (MMLU's costs span one and a half decades)."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure
from plot_checks import outside_axes, overlapping_texts, overlapping_ticks, simulation_run

from banditroute.simulation.plot import run_figure


@pytest.mark.parametrize("n_models", [2, 11, 13])
def test_quality_panel_shows_the_strongest_model(figures: list[Figure], n_models: int) -> None:
    """The quality panel draws a horizontal line at the strongest single model's quality
    (GPT-4 here, not the best fixed model under the budget), named in the legend and in view."""
    summary, traces = simulation_run(n_models)
    fig = run_figure(summary, traces)
    figures.append(fig)
    quality_ax = fig.axes[0]
    top = summary["models"]["openai/gpt-4-1106-preview"]["quality"]
    legend = quality_ax.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert any("strongest" in text and "gpt-4-1106-preview" in text for text in labels), labels
    flat = [line for line in quality_ax.get_lines() if len(set(line.get_ydata())) == 1]  # type: ignore[arg-type]
    assert any(float(line.get_ydata()[0]) == pytest.approx(top) for line in flat)  # type: ignore[index]
    low, high = quality_ax.get_ylim()
    assert low < top < high


@pytest.mark.parametrize("n_models", [2, 11, 13])
def test_plane_labels_neither_overlap_nor_leave_the_axes(
    figures: list[Figure], n_models: int
) -> None:
    """Every model in the cost-quality plane is labelled (or listed in the legend when no spot
    is free); no two labels overlap and none is clipped at the axes' edge."""
    summary, traces = simulation_run(n_models)
    fig = run_figure(summary, traces)
    figures.append(fig)
    plane = fig.axes[2]
    assert overlapping_texts(fig, plane) == []
    assert outside_axes(fig, plane) == []
    legend = plane.get_legend()
    assert legend is not None
    listed = " ".join(t.get_text() for t in legend.get_texts()).replace("\n", " ")
    drawn = {t.get_text() for t in plane.texts}
    for model in summary["models"]:
        short = model.rsplit("/", 1)[-1]
        assert short in drawn or short in listed, short


@pytest.mark.parametrize("n_models", [2, 13])
def test_log_tick_labels_do_not_pile_up(figures: list[Figure], n_models: int) -> None:
    """The plane's log cost axis and the cost panel's log axis label ticks that do not
    overlap one another (minor ticks over a decade and a half once printed 2x10^-4 3x10^-4 ...
    on top of each other)."""
    summary, traces = simulation_run(n_models)
    fig = run_figure(summary, traces)
    figures.append(fig)
    cost_ax, plane = fig.axes[1], fig.axes[2]
    assert overlapping_ticks(fig, plane.xaxis) == []
    assert overlapping_ticks(fig, cost_ax.yaxis) == []
    fig.canvas.draw()
    assert len([t for t in plane.get_xticklabels() if t.get_text()]) >= 2
