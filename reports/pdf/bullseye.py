"""The AHA 16-segment bullseye of a reader's T1 bias: the mean T1 difference from the reference per segment.

Rings from the outside in: basal (1-6), mid (7-12), apical (13-16); segment 1 (basal anterior) from 60 to 120
degrees and on counterclockwise, as on the node's console bullseye (:mod:`reports.console_images`). A segment is
coloured from blue (reader's T1 below the reference) through white to red (above), saturated at
``limit_ms``; a segment no attempt covered is grey and says "no data".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import fmean

from markupsafe import Markup

from inference.aha import LEVEL_SEGMENTS, AhaLevel
from reports.pdf.svg import Canvas, diverging_colour

#: Where each level's first segment starts (degrees counterclockwise from 3 o'clock).
RING_START_DEG = {AhaLevel.BASAL: 60.0, AhaLevel.MID: 60.0, AhaLevel.APICAL: 45.0}
#: Ring radii as fractions of the outer radius: (inner, outer) per level, apex 17 inside.
RING_FRACTIONS = {AhaLevel.BASAL: (0.72, 1.0), AhaLevel.MID: (0.44, 0.72), AhaLevel.APICAL: (0.18, 0.44)}
NO_DATA_COLOUR = "#e3e3e3"


def mean_segment_bias_ms(differences: Sequence[Mapping[int, float]]) -> dict[int, float]:
    """Per AHA segment, the mean of the differences (ms) where any attempt has one."""
    values: dict[int, list[float]] = {}
    for item in differences:
        for segment, value in item.items():
            if math.isfinite(value):
                values.setdefault(int(segment), []).append(float(value))
    return {segment: fmean(found) for segment, found in sorted(values.items())}


def _sector(cx: float, cy: float, inner: float, outer: float, start_deg: float, width_deg: float) -> str:
    a0, a1 = math.radians(start_deg), math.radians(start_deg + width_deg)

    def point(radius: float, angle: float) -> str:
        return f"{cx + radius * math.cos(angle):.2f} {cy - radius * math.sin(angle):.2f}"

    large = 1 if width_deg > 180 else 0
    return (f"M {point(outer, a0)} A {outer:.2f} {outer:.2f} 0 {large} 0 {point(outer, a1)} "
            f"L {point(inner, a1)} A {inner:.2f} {inner:.2f} 0 {large} 1 {point(inner, a0)} Z")


def bias_bullseye(bias_ms: Mapping[int, float], *, title: str, limit_ms: float = 50.0,
                  width: float = 340.0, size: float = 210.0) -> Markup:
    """The bullseye of ``bias_ms`` (segment -> mean T1 difference in ms), ``size`` across, with a colour bar."""
    legend_height = 40.0
    canvas = Canvas(width, size + legend_height + 20.0, title)
    canvas.text(48.0, 14.0, title, size=11.0, bold=True)
    cx, cy, radius = width / 2, 20.0 + size / 2, size / 2 - 4.0
    for level, segments in LEVEL_SEGMENTS.items():
        inner, outer = (fraction * radius for fraction in RING_FRACTIONS[level])
        width = 360.0 / len(segments)
        for index, segment in enumerate(segments):
            start = RING_START_DEG[level] + index * width
            value = bias_ms.get(segment)
            fill = NO_DATA_COLOUR if value is None else diverging_colour(value, limit_ms)
            canvas.path(_sector(cx, cy, inner, outer, start, width), fill=fill, width=1.2)
            middle = math.radians(start + width / 2)
            label_radius = (inner + outer) / 2
            x, y = cx + label_radius * math.cos(middle), cy - label_radius * math.sin(middle)
            canvas.text(x, y - 2, str(segment), size=7.0, anchor="middle", colour="#555555")
            shown = "no data" if value is None else f"{value:+.0f}"
            strong = value is not None and abs(value) > 0.6 * limit_ms
            canvas.text(x, y + 8, shown, size=6.5 if value is None else 8.5, anchor="middle",
                        colour="#ffffff" if strong else "#111111", bold=value is not None)
    apex = RING_FRACTIONS[AhaLevel.APICAL][0] * radius
    canvas.path(f"M {cx - apex:.2f} {cy:.2f} A {apex:.2f} {apex:.2f} 0 1 0 {cx + apex:.2f} {cy:.2f} "
                f"A {apex:.2f} {apex:.2f} 0 1 0 {cx - apex:.2f} {cy:.2f} Z", fill=NO_DATA_COLOUR, width=1.2)
    canvas.text(cx, cy + 3, "17", size=7.0, anchor="middle", colour="#555555")
    _colour_bar(canvas, cx - 100.0, size + 26.0, 200.0, limit_ms)
    return canvas.markup()


def _colour_bar(canvas: Canvas, x: float, y: float, width: float, limit_ms: float) -> None:
    steps = 24
    for index in range(steps):
        value = -limit_ms + (index + 0.5) * 2 * limit_ms / steps
        canvas.rect(x + index * width / steps, y, width / steps + 0.3, 8.0, fill=diverging_colour(value, limit_ms))
    canvas.rect(x, y, width, 8.0, fill="none", stroke="#777777")
    for value, anchor in ((-limit_ms, "start"), (0.0, "middle"), (limit_ms, "end")):
        position = x + (value + limit_ms) / (2 * limit_ms) * width
        canvas.text(position, y + 19, f"{value:+.0f} ms" if value else "0", size=7.5, anchor=anchor)
    canvas.text(x + width / 2, y + 30, "reader's T1 minus the reference's", size=7.5, anchor="middle",
                colour="#555555")
