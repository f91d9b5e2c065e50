"""The usage plot reads truthfully at one bucket, many buckets with gaps, and many models."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from matplotlib import dates
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from plot_checks import T0, distinct_line_styles, usage_report

from banditroute.usage import UsageReport, usage_figure


def _draw(made: list[Figure], report: UsageReport) -> Figure:
    fig = usage_figure(report)
    made.append(fig)
    return fig


def test_one_bucket_spans_about_that_bucket(figures: list[Figure]) -> None:
    """With a single hourly bucket the time axis covers that hour (within a day), not the
    years matplotlib's default date range would show, and its ticks read as times."""
    fig = _draw(figures, usage_report(2, [0]))
    for ax in fig.axes:
        low, high = (dates.num2date(v) for v in ax.get_xlim())
        assert low <= T0 <= high
        assert high - low <= timedelta(days=1)
    fig.canvas.draw()
    latency_ax = fig.axes[2]
    labels = [t.get_text() for t in latency_ax.get_xticklabels() if t.get_text()]
    assert labels
    assert all(":" in text or "Dec" in text for text in labels), labels


@pytest.mark.parametrize("n_models", [2, 11, 13])
def test_every_model_gets_its_own_colour(figures: list[Figure], n_models: int) -> None:
    """Calls and spend draw one line per model, each in a colour no other model has (11
    models once gave 10 colours: two blues)."""
    fig = _draw(figures, usage_report(n_models, list(range(6))))
    calls_ax, spend_ax = fig.axes[:2]
    for ax in (calls_ax, spend_ax):
        colours = {style[0] for style in distinct_line_styles(ax)}
        assert len(ax.get_lines()) == n_models
        assert len(colours) == n_models


def test_many_models_keep_distinct_styles(figures: list[Figure]) -> None:
    """Past the palette's 20 colours, each model still has a (colour, line style) of its own."""
    fig = _draw(figures, usage_report(25, list(range(3))))
    assert len(distinct_line_styles(fig.axes[0])) == 25


def test_lines_break_where_buckets_are_missing(figures: list[Figure]) -> None:
    """A gap of buckets without decisions breaks every line (a NaN between the points)
    instead of joining them as if traffic had flowed; adjacent buckets stay joined."""
    fig = _draw(figures, usage_report(3, [0, 1, 2, 7, 8, 30]))
    for ax in fig.axes:
        for line in ax.get_lines():
            ys = [float(y) for y in line.get_ydata()]  # type: ignore[union-attr]
            assert sum(math.isnan(y) for y in ys) >= 2, line.get_label()
    joined = _draw(figures, usage_report(3, [0, 1, 2, 3]))
    for line in joined.axes[0].get_lines():
        assert not any(math.isnan(float(y)) for y in line.get_ydata())  # type: ignore[union-attr]


def test_error_rate_axis_is_labelled_in_percent(figures: list[Figure]) -> None:
    """The error-rate axis shows its shares as percentages: a 5% error rate is drawn at 0.05
    on an axis whose ticks read "…%" (share 1 = 100%) and that reaches it; an all-OK period
    shows 0-1%, not a bare 0-0.05 scale labelled as percent."""
    fig = _draw(figures, usage_report(2, [0, 1, 2, 3]))
    error_ax = fig.axes[3]
    formatter = error_ax.yaxis.get_major_formatter()
    assert isinstance(formatter, PercentFormatter)
    assert formatter.xmax == 1.0
    (line,) = error_ax.get_lines()
    assert max(float(y) for y in line.get_ydata()) == pytest.approx(0.05)  # type: ignore[union-attr]
    assert error_ax.get_ylim()[1] >= 0.05
    calm = _draw(figures, usage_report(2, [1, 2]))
    assert calm.axes[3].get_ylim() == (0.0, 0.01)
    calm.canvas.draw()
    labels = [t.get_text() for t in calm.axes[3].get_yticklabels() if t.get_text()]
    assert labels
    assert all(text.endswith("%") for text in labels), labels
