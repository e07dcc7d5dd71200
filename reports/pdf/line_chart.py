"""A line chart with markers: the reports' plots of a figure over attempts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from reports.pdf.svg import GRID_COLOUR, PALETTE, Axis, Canvas, tick_label

MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48.0, 12.0, 24.0, 34.0
LEGEND_WIDTH = 120.0


@dataclass(frozen=True)
class Series:
    """One line: its name in the legend and its (x, y) points in x order."""

    name: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Guide:
    """A dashed horizontal line across the plot (a threshold, or zero), with its label."""

    y: float
    label: str
    colour: str = "#7f7f7f"


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               y_limits: tuple[float, float] | None = None, guides: Sequence[Guide] = (),
               width: float = 340.0, height: float = 200.0) -> Markup:
    """``series`` over integer x (attempts), with a legend on the right and ``guides`` as dashed lines.

    ``y_limits`` fixes the y axis (Dice: 0.5 to 1); otherwise it spans the data and the guides. A chart without
    any point says so instead of drawing empty axes.
    """
    canvas = Canvas(width, height, title)
    canvas.text(MARGIN_LEFT, 14.0, title, size=11.0, bold=True)
    plot_right = width - MARGIN_RIGHT - LEGEND_WIDTH
    plot_bottom = height - MARGIN_BOTTOM
    xs = [x for item in series for x, _ in item.points]
    ys = [y for item in series for _, y in item.points]
    if not xs:
        canvas.text((MARGIN_LEFT + plot_right) / 2, height / 2, "no scored attempt yet", anchor="middle",
                    colour="#7f7f7f")
        return canvas.markup()
    if y_limits is not None:  # widened to a round value below when a point lies lower (never clipped)
        low = min(y_limits[0], math.floor(min(ys) * 10.0) / 10.0)
        y_axis = Axis(low, max(y_limits[1], max(ys)), plot_bottom, MARGIN_TOP)
    else:
        y_axis = Axis.spanning(ys, plot_bottom, MARGIN_TOP, include=[guide.y for guide in guides])
    x_low, x_high = min(xs), max(xs)
    x_axis = Axis(x_low - 0.5, x_high + 0.5, MARGIN_LEFT, plot_right)
    for tick in y_axis.ticks():
        y = y_axis(tick)
        canvas.line(MARGIN_LEFT, y, plot_right, y, colour=GRID_COLOUR, width=0.6)
        canvas.text(MARGIN_LEFT - 4, y + 3, tick_label(tick, y_axis.tick_step), size=8.5, anchor="end")
    for x in range(int(x_low), int(x_high) + 1):
        canvas.text(x_axis(x), plot_bottom + 12, str(x), size=8.5, anchor="middle")
    canvas.line(MARGIN_LEFT, plot_bottom, plot_right, plot_bottom)
    canvas.line(MARGIN_LEFT, MARGIN_TOP, MARGIN_LEFT, plot_bottom)
    canvas.text((MARGIN_LEFT + plot_right) / 2, height - 6, x_label, size=9.0, anchor="middle")
    canvas.text(12, (MARGIN_TOP + plot_bottom) / 2, y_label, size=9.0, anchor="middle", rotate=-90)
    for guide in guides:
        if y_axis.low <= guide.y <= y_axis.high:
            y = y_axis(guide.y)
            canvas.line(MARGIN_LEFT, y, plot_right, y, colour=guide.colour, width=1.0, dash="4 3")
            canvas.text(MARGIN_LEFT + 3, y - 3, guide.label, size=8.0, colour=guide.colour)
    for index, item in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        points = [(x_axis(x), y_axis(y)) for x, y in item.points]
        canvas.polyline(points, colour=colour)
        for point_x, point_y in points:
            canvas.circle(point_x, point_y, 3.0, fill=colour)
        legend_y = MARGIN_TOP + 6 + 14 * index
        canvas.line(plot_right + 10, legend_y - 3, plot_right + 24, legend_y - 3, colour=colour, width=2.0)
        canvas.circle(plot_right + 17, legend_y - 3, 2.6, fill=colour)
        canvas.text(plot_right + 28, legend_y, item.name if item.points else f"{item.name}: none", size=8.5)
    return canvas.markup()
