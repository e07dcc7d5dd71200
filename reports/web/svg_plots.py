"""Small inline SVG plots for the training pages: lines over attempts and a 17-segment bullseye of differences.

The pages draw their plots on the server as SVG text (no script, no image files): they print, scale and read in
a headless browser like the rest of the page. Every label is escaped. The PDF reports' plots
(:mod:`reports.pdf.line_chart`) set their fonts in ``style`` attributes, which the page's Content-Security-Policy
(``style-src 'self'``, :mod:`reports.web.headers`) refuses; these carry classes that ``static/training.css`` styles
instead, so that the page needs no inline style.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

#: Colours of the series in order (colour-blind safe, Okabe-Ito).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")


@dataclass(frozen=True)
class LineSeries:
    """One line: its name in the legend and (x, y) points; y None leaves a gap."""

    name: str
    points: Sequence[tuple[float, float | None]]


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _format_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{value:.{decimals}f}"


def line_chart(
    series: Sequence[LineSeries],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    threshold: float | None = None,
    threshold_label: str = "",
    x_ticks: Sequence[tuple[float, str]] | None = None,
    width: int = 560,
    height: int = 240,
) -> Markup:
    """A line chart with markers, axes, a legend and an optional dashed threshold line.

    ``y_range`` fixes the axis (Dice: 0 to 1); otherwise it spans the data and the threshold. ``x_ticks`` are
    (x, label) pairs; otherwise every integer x in the data is a tick.
    """
    left, right, top, bottom = 56, 16, 28, 44
    legend_rows = math.ceil(len(series) / 3) if len(series) > 1 else 0
    height += 18 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom - 18 * legend_rows
    xs = [x for line in series for x, _ in line.points]
    ys = [y for line in series for _, y in line.points if y is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<title>{escape(title)}</title>',
             f'<text x="{left}" y="16" class="plot-title">{escape(title)}</text>']
    if not xs or not ys:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="plot-empty">'
                     'no scored attempts yet</text></svg>')
        return Markup("".join(parts))
    if y_range is None:
        low = min(ys + ([threshold] if threshold is not None else []))
        high = max(ys + ([threshold] if threshold is not None else []))
        pad = (high - low) * 0.1 or max(abs(high) * 0.1, 1.0)
        y_low, y_high = low - pad, high + pad
    else:
        y_low, y_high = y_range
    x_low, x_high = min(xs), max(xs)
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low)) * plot_h

    step = _nice_step(y_high - y_low)
    tick = math.ceil(y_low / step) * step
    while tick <= y_high + 1e-9:
        y = py(tick)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="plot-grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="plot-tick">'
                     f'{_format_tick(tick, step)}</text>')
        tick += step
    ticks = list(x_ticks) if x_ticks is not None else [(float(x), str(int(x))) for x in sorted(set(xs))
                                                      if float(x).is_integer()]
    if len(ticks) > 16:  # keep the labels readable
        ticks = ticks[:: math.ceil(len(ticks) / 16)]
    for x, label in ticks:
        parts.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="plot-tick">'
                     f'{escape(label)}</text>')
    parts.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" class="plot-axis"/>'
                 f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" class="plot-axis"/>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle" class="plot-label">'
                 f'{escape(x_label)}</text>'
                 f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" '
                 f'class="plot-label">{escape(y_label)}</text>')
    if threshold is not None and y_low <= threshold <= y_high:
        y = py(threshold)
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="plot-threshold"/>')
        if threshold_label:
            parts.append(f'<text x="{left + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" '
                         f'class="plot-threshold-label">{escape(threshold_label)}</text>')
    for index, line in enumerate(series):
        colour = PALETTE[index % len(PALETTE)]
        run: list[str] = []
        for x, value in list(line.points) + [(math.nan, None)]:
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline points="{" ".join(run)}" fill="none" stroke="{colour}" '
                                 'stroke-width="2"/>')
                run = []
                continue
            run.append(f"{px(x):.1f},{py(value):.1f}")
            parts.append(f'<circle cx="{px(x):.1f}" cy="{py(value):.1f}" r="3.5" fill="{colour}">'
                         f'<title>{escape(line.name)}: {value:.3g}</title></circle>')
    if legend_rows:
        for index, line in enumerate(series):
            row, column = divmod(index, 3)
            x, y = left + column * (plot_w / 3), top + plot_h + 50 + 18 * row
            parts.append(f'<rect x="{x:.1f}" y="{y - 9}" width="12" height="12" '
                         f'fill="{PALETTE[index % len(PALETTE)]}"/>'
                         f'<text x="{x + 17:.1f}" y="{y + 1}" class="plot-legend">{escape(line.name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


#: AHA 17-segment bullseye: (ring, segments counter-clockwise from the anterior, start angle in degrees).
_RINGS = ((1, range(1, 7), 60.0), (2, range(7, 13), 60.0), (3, range(13, 17), 45.0))


def _diverging(value: float, limit: float) -> str:
    """Blue (negative) - white - red (positive), saturating at +-limit."""
    share = max(-1.0, min(1.0, value / limit)) if limit > 0 else 0.0
    fade = int(round(255 * (1 - abs(share))))
    return f"rgb(255,{fade},{fade})" if share >= 0 else f"rgb({fade},{fade},255)"


def _wedge(cx: float, cy: float, inner: float, outer: float, start_deg: float, end_deg: float) -> str:
    def point(radius: float, angle_deg: float) -> str:
        angle = math.radians(angle_deg)
        return f"{cx + radius * math.cos(angle):.2f},{cy - radius * math.sin(angle):.2f}"

    large = 1 if end_deg - start_deg > 180 else 0
    return (f"M{point(outer, start_deg)} A{outer},{outer} 0 {large} 0 {point(outer, end_deg)} "
            f"L{point(inner, end_deg)} A{inner},{inner} 0 {large} 1 {point(inner, start_deg)} Z")


def bullseye(values: dict[int, float], *, title: str, unit: str, limit: float, size: int = 220) -> Markup:
    """The AHA 17-segment bullseye (basal outside, apex in the centre, anterior up, septum left) coloured by
    ``values`` (blue below zero, red above, full colour at ``limit``); segments without a value are grey."""
    top = 22
    cx, cy = size / 2, top + size / 2
    radii = (size * 0.46, size * 0.34, size * 0.22, size * 0.10)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot bullseye" viewBox="0 0 {size} {size + top}" '
             f'width="{size}" height="{size + top}" role="img" aria-label="{escape(title)} ({escape(unit)})">',
             f'<title>{escape(title)} ({escape(unit)}): blue below, red above the reference</title>',
             f'<text x="{cx}" y="15" text-anchor="middle" class="plot-title">{escape(title)}</text>']

    def cell(segment: int, path: str, label_x: float, label_y: float) -> None:
        value = values.get(segment)
        fill = "#e5e7eb" if value is None else _diverging(value, limit)
        text = "" if value is None else f"{value:+.0f}"
        tip = f"segment {segment}: " + ("no value" if value is None else f"{value:+.1f} {unit}")
        parts.append(f'<path d="{path}" fill="{fill}" class="bullseye-cell"><title>{escape(tip)}</title></path>'
                     f'<text x="{label_x:.1f}" y="{label_y + 4:.1f}" text-anchor="middle" class="bullseye-value">'
                     f'{escape(text)}</text>')

    for ring, segments, start in _RINGS:
        outer, inner = radii[ring - 1], radii[ring]
        width = 360.0 / len(segments)
        for offset, segment in enumerate(segments):
            # Counter-clockwise from the anterior segment at the top-left, as the AHA model is drawn.
            begin = start + offset * width
            middle = math.radians(begin + width / 2)
            radius = (inner + outer) / 2
            cell(segment, _wedge(cx, cy, inner, outer, begin, begin + width),
                 cx + radius * math.cos(middle), cy - radius * math.sin(middle))
    cell(17, f"M{cx - radii[3]:.2f},{cy:.2f} A{radii[3]},{radii[3]} 0 1 0 {cx + radii[3]:.2f},{cy:.2f} "
             f"A{radii[3]},{radii[3]} 0 1 0 {cx - radii[3]:.2f},{cy:.2f} Z", cx, cy)
    parts.append("</svg>")
    return Markup("".join(parts))


__all__ = ["PALETTE", "LineSeries", "bullseye", "line_chart"]
