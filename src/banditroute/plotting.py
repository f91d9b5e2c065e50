"""Shared matplotlib helpers so every plot reads truthfully: one distinct style per series,
point labels that never overlap, and log axes whose tick labels do not pile up.

Imported only by the functions that draw (matplotlib is slow to import, and the CLI's parser
must not pay for it). Label placement is a small greedy search over fixed offsets measured
with the figure's renderer: iterative movers such as adjustText reduce overlaps but do not
rule them out, and a label that finds no free spot is better listed than drawn over another.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib import colormaps, ticker
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backend_bases import RendererBase
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

__all__ = [
    "SeriesStyle",
    "annotate_points",
    "log_ticks",
    "outside_legend",
    "renderer",
    "series_styles",
    "text_overlaps",
]

_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


@dataclass(frozen=True)
class SeriesStyle:
    """How to draw one series: a colour, a line style and a marker."""

    color: tuple[float, float, float, float]
    linestyle: str
    marker: str

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``Axes.plot``."""
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker}


def series_styles(n: int) -> list[SeriesStyle]:
    """``n`` styles, each (colour, line style) pair used once: up to 10 series get tab10's
    colours, up to 20 tab20's (its dark shades first), and beyond that tab20's colours repeat
    with the next line style. Markers cycle as a further cue."""
    if n <= 10:
        colours = [colormaps["tab10"](i) for i in range(10)]
    else:  # dark shades first: 11 series must not give two near-identical blues
        tab20 = colormaps["tab20"]
        colours = [tab20(i) for i in range(0, 20, 2)] + [tab20(i) for i in range(1, 20, 2)]
    return [
        SeriesStyle(
            tuple(float(c) for c in colours[i % len(colours)]),  # type: ignore[arg-type]
            _LINESTYLES[(i // len(colours)) % len(_LINESTYLES)],
            _MARKERS[i % len(_MARKERS)],
        )
        for i in range(n)
    ]


def renderer(fig: Figure) -> RendererBase:
    """The Agg renderer that measures text as the saved PNG will draw it."""
    return fig.canvas.get_renderer()  # type: ignore[attr-defined,no-any-return]


def text_overlaps(boxes: Sequence[Bbox]) -> list[tuple[int, int]]:
    """Index pairs of the boxes that overlap (touching edges do not count)."""
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


def _candidates() -> Iterable[tuple[float, float, str, str]]:
    """Offsets in points (dx, dy) with the alignment that keeps the text on that side."""
    for radius in (4.0, 9.0, 16.0, 26.0, 40.0):
        for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)):
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            yield dx * radius, dy * radius, ha, va


def annotate_points(
    ax: Axes,
    points: Sequence[tuple[float, float, str]],
    *,
    markers: Sequence[tuple[float, float]] = (),
    **text: Any,
) -> list[str]:
    """Label each ``(x, y, label)`` near its point where the label overlaps no text already
    in the axes, no other point of ``points`` or ``markers`` (unlabelled points, in data
    coordinates) and no legend inside the axes, and stays inside the axes; far placements get
    a leader line. Returns the labels that found no such spot (not drawn: the caller lists
    them). Call it once the axes' limits and the figure's layout are final, since offsets are
    measured in display space."""
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    measure = renderer(fig)
    frame = ax.get_window_extent(measure)
    pad = 3.0  # pixels around each point that a label must leave free
    centres = [ax.transData.transform((x, y)) for x, y, _ in points]
    centres += [ax.transData.transform(xy) for xy in markers]
    boxes = [Bbox.from_extents(x - pad, y - pad, x + pad, y + pad) for x, y in centres]
    taken = [t.get_window_extent(measure) for t in ax.texts]
    legend = ax.get_legend()
    if legend is not None:
        taken.append(legend.get_window_extent(measure))
    unplaced: list[str] = []
    for index, (x, y, label) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            unplaced.append(label)
            continue
        others = boxes[:index] + boxes[index + 1 :]
        for dx, dy, ha, va in _candidates():
            far = max(abs(dx), abs(dy)) > 10
            note: Annotation = ax.annotate(
                label,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.6"} if far else None,
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
                **text,
            )
            box = note.get_window_extent(measure)
            inside = (
                box.x0 >= frame.x0
                and box.x1 <= frame.x1
                and box.y0 >= frame.y0
                and box.y1 <= frame.y1
            )
            if inside and not any(box.overlaps(b) for b in (*taken, *others)):
                taken.append(box)
                break
            note.remove()
        else:
            unplaced.append(label)
    return unplaced


def _compact(value: float, _pos: object = None) -> str:
    """A tick value in as few characters as reads exactly (0.0002, 0.5, 3, 1e-06)."""
    return f"{value:.3g}"


def log_ticks(axis: Axis, low: float, high: float) -> None:
    """Ticks on a log ``axis`` spanning ``[low, high]`` (both > 0) that do not pile up: every
    decade over a wide span (every second or more past 6 decades), 1-2-5 within a decade or
    two, plain numbers as labels and no labels on minor ticks."""
    span = math.log10(high / low) if low > 0 and high > low else 1.0
    if span <= 2.0:
        subs: tuple[float, ...] = (1.0, 2.0, 5.0)
    elif span <= 3.5:
        subs = (1.0, 3.0)
    else:
        subs = (1.0,)
    axis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs, numticks=8))
    axis.set_major_formatter(ticker.FuncFormatter(_compact))
    axis.set_minor_locator(ticker.LogLocator(base=10.0, subs="auto", numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def outside_legend(ax: Axes, unlabelled: Sequence[str] = (), **kwargs: Any) -> Legend:
    """The axes' legend to the right of it (it hides no point), with a last entry naming the
    points :func:`annotate_points` found no room to label, if any."""
    handles, labels = ax.get_legend_handles_labels()
    if unlabelled:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(textwrap.fill("not labelled (no room): " + ", ".join(unlabelled), 40))
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), **kwargs)
