"""The drawing primitives of the reports' plots: an SVG canvas, linear axes with round ticks, a colour scale.

Plots are written as SVG text, inline in the report's HTML, so that WeasyPrint lays them out as vectors (sharp at
any zoom, text selectable). Every label is escaped here; callers pass plain text and numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

#: Printed size of one user unit of a plot: a 340-unit-wide plot is 82 mm wide: two fit side by side on A4.
MM_PER_UNIT = 0.24
#: Colours of the series in order (Okabe-Ito: told apart with the common colour-vision deficiencies).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#f0e442")
AXIS_COLOUR = "#444444"
GRID_COLOUR = "#dddddd"
FONT = "font-family:DejaVu Sans,sans-serif"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


@dataclass
class Canvas:
    """An SVG drawing of ``width`` x ``height`` user units; ``label`` is its accessible name (role img)."""

    width: float
    height: float
    label: str
    parts: list[str] = field(default_factory=list)

    def line(self, x1: float, y1: float, x2: float, y2: float, *, colour: str = AXIS_COLOUR, width: float = 1.0,
             dash: str = "") -> None:
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{_number(x1)}" y1="{_number(y1)}" x2="{_number(x2)}" y2="{_number(y2)}" '
                          f'stroke="{colour}" stroke-width="{_number(width)}"{dashed}/>')

    def polyline(self, points: Sequence[tuple[float, float]], *, colour: str, width: float = 1.6) -> None:
        if len(points) < 2:
            return
        text = " ".join(f"{_number(x)},{_number(y)}" for x, y in points)
        self.parts.append(f'<polyline points="{text}" fill="none" stroke="{colour}" '
                          f'stroke-width="{_number(width)}" stroke-linejoin="round"/>')

    def circle(self, x: float, y: float, radius: float, *, fill: str, stroke: str = "#ffffff") -> None:
        self.parts.append(f'<circle cx="{_number(x)}" cy="{_number(y)}" r="{_number(radius)}" fill="{fill}" '
                          f'stroke="{stroke}" stroke-width="0.8"/>')

    def rect(self, x: float, y: float, width: float, height: float, *, fill: str, stroke: str = "none") -> None:
        self.parts.append(f'<rect x="{_number(x)}" y="{_number(y)}" width="{_number(width)}" '
                          f'height="{_number(height)}" fill="{fill}" stroke="{stroke}"/>')

    def path(self, commands: str, *, fill: str, stroke: str = "#ffffff", width: float = 1.0) -> None:
        self.parts.append(f'<path d="{commands}" fill="{fill}" stroke="{stroke}" stroke-width="{_number(width)}"/>')

    def text(self, x: float, y: float, content: str, *, size: float = 10.0, anchor: str = "start",
             colour: str = "#222222", bold: bool = False, rotate: float = 0.0) -> None:
        weight = ";font-weight:bold" if bold else ""
        turn = f' transform="rotate({_number(rotate)} {_number(x)} {_number(y)})"' if rotate else ""
        self.parts.append(f'<text x="{_number(x)}" y="{_number(y)}" text-anchor="{anchor}" fill="{colour}" '
                          f'style="{FONT};font-size:{_number(size)}px{weight}"{turn}>{escape(content)}</text>')

    def markup(self) -> Markup:
        """The finished ``<svg>`` element (safe to insert into the template unescaped)."""
        return Markup(
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_number(self.width)} {_number(self.height)}" '
            f'width="{_number(self.width * MM_PER_UNIT)}mm" height="{_number(self.height * MM_PER_UNIT)}mm" role="img" '
            f'aria-label="{escape(self.label)}">' + "".join(self.parts) + "</svg>"
        )


def nice_step(span: float, n_ticks: int = 5) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving about ``n_ticks`` ticks over ``span``."""
    raw = span / max(n_ticks, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(factor * magnitude for factor in (1.0, 2.0, 2.5, 5.0, 10.0) if raw <= factor * magnitude * 1.0001)


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick spacing needs (0.25 -> two, 0.5 -> one, 5 -> none)."""
    decimals = next(d for d in range(7) if abs(round(step, d) - step) < 1e-9 or d == 6)
    text = f"{value:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@dataclass(frozen=True)
class Axis:
    """A linear map from data values ``low..high`` to pixels ``start..end`` (end may be below start), with ticks
    every ``step``."""

    low: float
    high: float
    start: float
    end: float
    step: float = 0.0  # 0: a round step for the span

    @classmethod
    def spanning(cls, values: Sequence[float], start: float, end: float, *, include: Sequence[float] = (),
                 n_ticks: int = 5) -> Axis:
        """An axis whose limits, multiples of a round step, hold every value and every number of ``include``."""
        data = [v for v in (*values, *include) if math.isfinite(v)]
        low, high = (min(data), max(data)) if data else (0.0, 1.0)
        if high - low < 1e-9:
            low, high = low - 1.0, high + 1.0
        step = nice_step(high - low, n_ticks)
        return cls(math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, start, end, step)

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    @property
    def tick_step(self) -> float:
        return self.step or nice_step(self.high - self.low)

    def ticks(self) -> list[float]:
        count = int(round((self.high - self.low) / self.tick_step))
        return [self.low + index * self.tick_step for index in range(count + 1)]


def diverging_colour(value: float, limit: float) -> str:
    """Blue for negative, white at zero, red for positive ``value``, saturated at +/- ``limit``."""
    t = max(-1.0, min(1.0, value / limit)) if limit > 0 else 0.0
    low, mid, high = (33, 102, 172), (247, 247, 247), (178, 24, 43)
    end = high if t > 0 else low
    r, g, b = (round(m + abs(t) * (e - m)) for m, e in zip(mid, end, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"
