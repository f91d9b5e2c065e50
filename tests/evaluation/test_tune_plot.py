"""The tune frontier plot: a quality axis that follows the data within the reward range, and
labels that never overlap, with few or many settings and references."""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure
from plot_checks import outside_axes, overlapping_texts, overlapping_ticks, tune_result

from banditroute.evaluation.tune import QUALITY_RANGE, frontier_figure


@pytest.mark.parametrize(("settings", "references"), [(2, 2), (8, 4), (24, 13)])
def test_quality_axis_stays_within_the_reward_range(
    figures: list[Figure], settings: int, references: int
) -> None:
    """Intervals reaching -0.15 and 1.75 (as the issue's did) do not stretch the quality axis
    past the range quality can take, plus a small margin; every estimate stays in view."""
    result = tune_result(settings, references)
    fig = frontier_figure(result)
    figures.append(fig)
    low, high = fig.axes[0].get_ylim()
    assert QUALITY_RANGE[0] - 0.05 <= low
    assert high <= QUALITY_RANGE[1] + 0.05
    assert all(low <= p.quality.estimate <= high for p in result.points)


@pytest.mark.parametrize(("settings", "references"), [(2, 2), (8, 4), (24, 13)])
def test_labels_do_not_overlap(figures: list[Figure], settings: int, references: int) -> None:
    """No two labels' boxes overlap and none leaves the axes, as the renderer draws them; the
    recommended setting is labelled; the cost axis's tick labels do not overlap either."""
    result = tune_result(settings, references)
    fig = frontier_figure(result)
    figures.append(fig)
    ax = fig.axes[0]
    assert overlapping_texts(fig, ax) == []
    assert outside_axes(fig, ax) == []
    assert result.recommended is not None
    drawn = {t.get_text() for t in ax.texts}
    assert result.points[result.recommended].label in drawn
    legend = ax.get_legend()
    assert legend is not None
    listed = " ".join(t.get_text() for t in legend.get_texts())
    unlabelled = [p.label.removeprefix("fixed:") for p in result.points if p.kind == "reference"]
    assert all(name in drawn or name in listed.replace("\n", " ") for name in unlabelled)
    assert overlapping_ticks(fig, ax.xaxis) == []
