"""Reasons to doubt a segmentation that passed as a left ventricle: anatomy and values a myocardium does not have.

inference/heart_check.py refuses what is not a short-axis LV at all. What passes may still be a poor segmentation of
a heart: a ring left open, a wall thinner or thicker than myocardium is, a ventricle too small or too large, or a
"myocardium" whose map values no myocardium has at the field strength (blood or lung inside the ring). The quality
model's predicted Dice may miss these on images unlike its training data; each such finding, in words, makes the
contours doubtful on its own.

Bounds (mm and ms on the patient):

======================== ============================================================== =====================
quantity                 why                                                            doubtful outside
======================== ============================================================== =====================
ring closure             fraction of the cavity border that is myocardium                >= 0.95
mean wall thickness      LV wall in health 6-12 mm; thinned infarcts 3-5, hypertrophy    3 to 20 mm
                         up to 20 (25-30 in the rare extreme, which then gets checked)
epicardial diameter      Sunnybrook expert contours 31-88 mm (apical to dilated)         25 to 95 mm
myocardial T1 (median)   native myocardium 900-1300 ms at 1.5 T and 1100-1500 ms at      150 to 1,700 ms (1.5 T),
                         3 T by MOLLI/ShMOLLI, post-contrast 300-700 ms; blood is        2,000 ms (3 T or
                         1,500-2,100 ms                                                  unknown)
myocardial T2 (median)   45-60 ms in health, up to about 80 ms in acute oedema            25 to 100 ms
======================== ============================================================== =====================
"""

from __future__ import annotations

import numpy as np

from inference.heart_check import HeartCheck
from inference.mapping import MapKind

MIN_RING_CLOSURE = 0.95
WALL_THICKNESS_MM = (3.0, 20.0)
EPICARDIAL_DIAMETER_MM = (25.0, 95.0)
T1_MS = {1.5: (150.0, 1700.0), 3.0: (150.0, 2000.0)}
T2_MS = (25.0, 100.0)


def t1_range_ms(field_strength_t: float | None) -> tuple[float, float]:
    """The myocardial T1 bounds at the field strength (3 T's, the wider, when it is unknown or above 2 T)."""
    return T1_MS[1.5] if field_strength_t is not None and field_strength_t < 2.0 else T1_MS[3.0]


def contour_doubts(check: HeartCheck, myocardium_median_ms: float, map_kind: MapKind,
                   field_strength_t: float | None = None) -> tuple[str, ...]:
    """Reasons in words to doubt a segmentation that passed :func:`inference.heart_check.check_left_ventricle`;
    empty when none. ``myocardium_median_ms`` is the median map value of the myocardium (NaN when none)."""
    doubts = []
    if check.enclosure < MIN_RING_CLOSURE:
        doubts.append(f"the myocardial ring is open ({100.0 * check.enclosure:.0f} % closed)")
    low, high = WALL_THICKNESS_MM
    if not low <= check.wall_thickness_mm <= high:
        doubts.append(f"mean wall thickness {check.wall_thickness_mm:.1f} mm is outside {low:.0f}-{high:.0f} mm")
    low, high = EPICARDIAL_DIAMETER_MM
    if not low <= check.epicardial_diameter_mm <= high:
        doubts.append(f"LV diameter {check.epicardial_diameter_mm:.0f} mm is outside {low:.0f}-{high:.0f} mm")
    if np.isfinite(myocardium_median_ms):
        quantity, (low, high) = (("T1", t1_range_ms(field_strength_t)) if MapKind(map_kind) is MapKind.T1
                                 else ("T2", T2_MS))
        if not low <= myocardium_median_ms <= high:
            doubts.append(f"myocardial {quantity} {myocardium_median_ms:.0f} ms is outside what myocardium measures "
                          f"({low:.0f}-{high:.0f} ms)")
    return tuple(doubts)
