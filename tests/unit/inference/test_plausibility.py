"""Anatomical and value plausibility of contours that passed as a left ventricle (inference/plausibility.py)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.heart_check import check_left_ventricle
from inference.mapping import MapKind
from inference.plausibility import contour_doubts, t1_range_ms

SPACING_MM = (1.5, 1.5)


def ring(outer_radius_mm: float, wall_mm: float, gap_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Myocardium and cavity masks of a centred ring on a 128 x 128 grid of 1.5 mm pixels."""
    rows, columns = np.mgrid[:128, :128]
    dy, dx = (rows - 63.5) * SPACING_MM[0], (columns - 63.5) * SPACING_MM[1]
    radius = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dy, dx)) % 360.0
    cavity = radius < outer_radius_mm - wall_mm
    myocardium = (radius < outer_radius_mm) & ~cavity & ~(angle < gap_deg)
    return myocardium, cavity


def doubts_of(outer_radius_mm: float, wall_mm: float, median_ms: float = 1200.0, kind: MapKind = MapKind.T1,
              field_t: float | None = 3.0, gap_deg: float = 0.0) -> tuple[str, ...]:
    myocardium, cavity = ring(outer_radius_mm, wall_mm, gap_deg)
    check = check_left_ventricle(myocardium, cavity, SPACING_MM)
    assert check.passed, check.reason
    return contour_doubts(check, median_ms, kind, field_t)


def test_a_normal_left_ventricle_raises_no_doubt() -> None:
    assert doubts_of(25.0, 9.0) == ()
    assert doubts_of(25.0, 9.0, median_ms=52.0, kind=MapKind.T2) == ()


def test_a_wall_thinner_than_myocardium_is_doubtful() -> None:
    (doubt,) = doubts_of(25.0, 2.2)
    assert doubt.startswith("mean wall thickness")


def test_a_ventricle_larger_than_any_is_doubtful() -> None:
    assert any(doubt.startswith("LV diameter") for doubt in doubts_of(52.0, 10.0))


def test_blood_inside_the_ring_is_doubtful_by_its_t1_at_the_field_strength() -> None:
    (doubt,) = doubts_of(25.0, 9.0, median_ms=1850.0, field_t=1.5)
    assert "myocardial T1 1850 ms" in doubt and "150-1700" in doubt
    assert doubts_of(25.0, 9.0, median_ms=1850.0, field_t=3.0) == ()  # native myocardium at 3 T reaches that
    assert doubts_of(25.0, 9.0, median_ms=2400.0, field_t=None)  # unknown field: the wider 3 T bounds


def test_a_t2_no_myocardium_has_is_doubtful() -> None:
    (doubt,) = doubts_of(25.0, 9.0, median_ms=140.0, kind=MapKind.T2)
    assert "myocardial T2 140 ms" in doubt


def test_an_open_ring_is_doubtful() -> None:
    myocardium, cavity = ring(25.0, 9.0, gap_deg=25.0)
    check = check_left_ventricle(myocardium, cavity, SPACING_MM)
    assert check.passed, check.reason  # a small gap passes as a left ventricle ...
    # ... but its values are not those of a whole ring
    assert any("ring is open" in doubt for doubt in contour_doubts(check, 1200.0, MapKind.T1, 3.0))


def test_values_without_a_median_are_not_judged() -> None:
    assert doubts_of(25.0, 9.0, median_ms=float("nan")) == ()


@pytest.mark.parametrize(("field_t", "high_ms"), [(1.5, 1700.0), (3.0, 2000.0), (None, 2000.0), (0.55, 1700.0)])
def test_t1_bounds_follow_the_field_strength(field_t: float | None, high_ms: float) -> None:
    assert t1_range_ms(field_t)[1] == high_ms
