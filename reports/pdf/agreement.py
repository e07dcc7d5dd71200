"""Agreement of a reader's T1 with the reference's, after Bland and Altman: each attempt's T1 difference (reader
minus reference) against the mean of the two T1 values, the mean difference (bias) and the 95% limits of agreement
(bias +/- 1.96 SD of the differences).

An attempt whose record holds only the difference (no T1 of the reader's own) has no mean to be placed at; when
any attempt lacks it the x axis is the order the attempts arrived in instead, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import fmean, stdev

from markupsafe import Markup

from reports.pdf.svg import GRID_COLOUR, PALETTE, Axis, Canvas, tick_label

LIMIT_FACTOR = 1.96  # of the standard deviation: 95% of differences under normality


@dataclass(frozen=True)
class Limits:
    """Bias and 95% limits of agreement of a set of differences (ms); the limits need two differences."""

    n: int
    bias_ms: float
    lower_ms: float | None
    upper_ms: float | None

    @classmethod
    def of(cls, differences_ms: Sequence[float]) -> Limits | None:
        if not differences_ms:
            return None
        bias = fmean(differences_ms)
        if len(differences_ms) < 2:
            return cls(1, bias, None, None)
        spread = LIMIT_FACTOR * stdev(differences_ms)
        return cls(len(differences_ms), bias, bias - spread, bias + spread)


@dataclass(frozen=True)
class AgreementPoint:
    """One attempt on the plot: its group (a case, or a trainee), T1 difference and the pair's mean T1 (ms)."""

    group: str
    difference_ms: float
    mean_ms: float | None  # (reader + reference) / 2; None when the reader's T1 is not recorded


def agreement_point(group: str, reader_t1_ms: float | None, difference_ms: float) -> AgreementPoint:
    """The point of an attempt whose reader's T1 is ``reader_t1_ms`` and difference from the reference
    ``difference_ms``: the reference read ``reader - difference``, so the pair's mean is ``reader - difference / 2``."""
    mean = reader_t1_ms - difference_ms / 2.0 if reader_t1_ms is not None else None
    return AgreementPoint(group, difference_ms, mean)


def agreement_plot(points: Sequence[AgreementPoint], *, title: str, groups: Sequence[str] = (),
                   width: float = 340.0, height: float = 200.0) -> Markup:
    """The Bland-Altman plot of ``points`` (in the order the attempts arrived), coloured by group, with the bias
    and the limits of all of them. ``groups`` fixes the groups' order (their colours, as in the other plots);
    groups of points it leaves out follow."""
    left, right, top, bottom = 48.0, 92.0, 24.0, 34.0
    canvas = Canvas(width, height, title)
    canvas.text(left, 14.0, title, size=11.0, bold=True)
    everything = [point.difference_ms for point in points]
    groups = list(dict.fromkeys([*groups, *(point.group for point in points)]))
    means = [point.mean_ms for point in points if point.mean_ms is not None]
    by_mean = bool(points) and len(means) == len(points)
    limits = Limits.of(everything)
    plot_right, plot_bottom = width - right, height - bottom
    if limits is None:
        canvas.text((left + plot_right) / 2, height / 2, "no T1 difference yet", anchor="middle", colour="#7f7f7f")
        return canvas.markup()
    guides = [limits.bias_ms, 0.0, *(v for v in (limits.lower_ms, limits.upper_ms) if v is not None)]
    y_axis = Axis.spanning(everything, plot_bottom, top, include=guides)
    if by_mean:
        x_axis = Axis.spanning(means, left, plot_right, n_ticks=4)
        for tick in x_axis.ticks():
            canvas.text(x_axis(tick), plot_bottom + 12, tick_label(tick, x_axis.tick_step), size=8.5, anchor="middle")
    else:
        x_axis = Axis(0.5, len(everything) + 0.5, left, plot_right)
    for tick in y_axis.ticks():
        y = y_axis(tick)
        canvas.line(left, y, plot_right, y, colour=GRID_COLOUR, width=0.6)
        canvas.text(left - 4, y + 3, tick_label(tick, y_axis.tick_step), size=8.5, anchor="end")
    canvas.line(left, plot_bottom, plot_right, plot_bottom)
    canvas.line(left, top, left, plot_bottom)
    x_label = "mean of reader's and reference's T1 (ms)" if by_mean else "attempt, in the order received"
    canvas.text((left + plot_right) / 2, height - 6, x_label, size=9.0, anchor="middle")
    canvas.text(12, (top + plot_bottom) / 2, "T1 difference (ms)", size=9.0, anchor="middle", rotate=-90)
    canvas.line(left, y_axis(0.0), plot_right, y_axis(0.0), colour="#999999", width=0.8)
    lines = [(limits.bias_ms, f"bias {limits.bias_ms:+.1f} ms", "#222222", "")]
    if limits.lower_ms is not None and limits.upper_ms is not None:
        lines += [(limits.upper_ms, f"+1.96 SD: {limits.upper_ms:+.1f} ms", "#b2182b", "4 3"),
                  (limits.lower_ms, f"\u22121.96 SD: {limits.lower_ms:+.1f} ms", "#2166ac", "4 3")]
    for value, label, colour, dash in lines:
        y = y_axis(value)
        canvas.line(left, y, plot_right, y, colour=colour, width=1.1, dash=dash)
        canvas.text(plot_right - 3, y - 3, label, size=7.5, colour=colour, anchor="end")
    for position, point in enumerate(points, start=1):
        x = x_axis(point.mean_ms) if by_mean and point.mean_ms is not None else x_axis(position)
        canvas.circle(x, y_axis(point.difference_ms), 3.0, fill=PALETTE[groups.index(point.group) % len(PALETTE)])
    for index, name in enumerate(groups):
        colour = PALETTE[index % len(PALETTE)]
        legend_y = top + 6 + 12 * index
        canvas.circle(plot_right + 8, legend_y - 3, 2.6, fill=colour)
        canvas.text(plot_right + 14, legend_y, name if len(name) <= 18 else name[:17] + "\u2026", size=7.5)
    return canvas.markup()
