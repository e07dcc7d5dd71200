"""AHA segments, RV insertion points and wall thickness against the phantom's truth."""

from __future__ import annotations

import numpy as np
import pytest

from inference.aha import (
    DEFAULT_ANTERIOR_INSERTION_DEG,
    aha_segments,
    display_angle_deg,
    rv_insertion_points,
    segment_of_angle,
    wall_thickness_mm,
)
from inference.contour_fit import FittedContours, fit_contours
from inference.errors import AnalysisError
from phantom import anatomy as phantom_anatomy
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel, Tissue


def _anatomy(seed: int, level: SliceLevel):
    return make_slice_anatomy(np.random.default_rng(seed), level, FieldStrength.T1_5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", list(SliceLevel))
def test_segments_reproduce_the_phantom_map(seed: int, level: SliceLevel) -> None:
    anatomy = _anatomy(seed, level)
    myocardium = anatomy.myocardium_mask
    segments = aha_segments(
        myocardium,
        anatomy.lv_centre_px,
        anatomy.rv_insertion_px[0],
        level.value,
        inferior_insertion_px=anatomy.rv_insertion_px[1],
        pixel_spacing_mm=anatomy.geometry.pixel_spacing_mm,
    )
    assert np.all(segments[~myocardium] == 0)
    agreement = float(np.mean(segments[myocardium] == anatomy.aha_segment_map[myocardium]))
    assert agreement >= 0.95


@pytest.mark.parametrize("level", list(SliceLevel))
def test_segment_of_angle_matches_the_phantom(level: SliceLevel) -> None:
    # The phantom keeps its own copy as the ground truth; the two must assign every angle to the same segment.
    rng = np.random.default_rng(17)
    theta_deg = np.concatenate([np.arange(-720.0, 720.0, 0.05), rng.uniform(-1000.0, 1000.0, 20_000)])
    insertions = [(DEFAULT_ANTERIOR_INSERTION_DEG, 120.0), (0.0, 90.0), (359.9, 180.0), (-30.0, 240.0)]
    insertions += [(float(a), float(s)) for a, s in zip(rng.uniform(0.0, 360.0, 20), rng.uniform(60.0, 180.0, 20),
                                                        strict=True)]
    for anterior_deg, span_deg in insertions:
        node = segment_of_angle(theta_deg, level.value, anterior_deg, span_deg)
        truth = phantom_anatomy.segment_of_angle(theta_deg, level, anterior_deg, span_deg)
        assert np.array_equal(node, truth), (level, anterior_deg, span_deg)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(AnalysisError):
        aha_segments(np.ones((4, 4), bool), (2.0, 2.0), (2.0, 0.0), "septal")


@pytest.mark.parametrize("seed", range(4))
def test_rv_insertion_points_near_the_truth(seed: int) -> None:
    anatomy = _anatomy(seed, SliceLevel.MID)
    spacing = anatomy.geometry.pixel_spacing_mm
    rv = np.isin(anatomy.label_map, [Tissue.RV_BLOOD, Tissue.RV_WALL])
    found = rv_insertion_points(anatomy.myocardium_mask, rv, anatomy.lv_centre_px, pixel_spacing_mm=spacing)
    for (x, y), (tx, ty) in zip(found, anatomy.rv_insertion_px, strict=True):
        angle = display_angle_deg(x, y, anatomy.lv_centre_px, spacing)
        truth = display_angle_deg(tx, ty, anatomy.lv_centre_px, spacing)
        assert abs((angle - truth + 180.0) % 360.0 - 180.0) < 10.0


def test_rv_insertion_fallback_uses_default_angles() -> None:
    anatomy = _anatomy(1, SliceLevel.MID)
    anterior, _ = rv_insertion_points(anatomy.myocardium_mask, None, anatomy.lv_centre_px)
    angle = float(display_angle_deg(anterior[0], anterior[1], anatomy.lv_centre_px, (1.0, 1.0)))
    assert angle == pytest.approx(DEFAULT_ANTERIOR_INSERTION_DEG, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", list(SliceLevel))
def test_wall_thickness_within_1_mm(seed: int, level: SliceLevel) -> None:
    anatomy = _anatomy(seed, level)
    spacing = anatomy.geometry.pixel_spacing_mm
    fitted = fit_contours(anatomy.cavity_mask, anatomy.myocardium_mask, spacing)
    thickness = wall_thickness_mm(
        fitted,
        spacing,
        anatomy.lv_centre_px,
        anatomy.rv_insertion_px[0],
        level,
        inferior_insertion_px=anatomy.rv_insertion_px[1],
    )
    assert set(thickness.per_segment_mm) == set(anatomy.wall_thickness_mm)
    for segment, truth_mm in anatomy.wall_thickness_mm.items():
        assert thickness.per_segment_mm[segment] == pytest.approx(truth_mm, abs=1.0)
    assert thickness.mean_mm == pytest.approx(np.mean(list(anatomy.wall_thickness_mm.values())), abs=1.0)


def _circle_px(centre: tuple[float, float], radius_px: float, n: int = 128) -> np.ndarray:
    angle = np.arange(n) * 2 * np.pi / n
    return np.stack([centre[0] + radius_px * np.cos(angle), centre[1] - radius_px * np.sin(angle)], axis=1)


def test_wall_thickness_is_never_negative_and_crossed_rays_are_left_out() -> None:
    """An epicardium shifted so far that it dips inside the endocardium on one side: those rays cross no wall."""
    centre = (60.0, 60.0)
    fitted = FittedContours(endo_px=_circle_px(centre, 20.0), epi_px=_circle_px((70.0, 60.0), 26.0),
                            pixel_spacing_mm=(1.0, 1.0))
    # Mid slice with the default insertions: the lateral wall (0 deg, +x) is thickest, the septum (180 deg) crossed.
    thickness = wall_thickness_mm(fitted, None, centre, (50.0, 40.0), SliceLevel.MID.value)
    values = np.array(list(thickness.per_segment_mm.values()))
    assert np.all(values[np.isfinite(values)] > 0)
    assert 0.0 < thickness.invalid_ray_fraction < 0.5
    assert thickness.mean_mm > 0
    septal = [thickness.per_segment_mm[s] for s in (8, 9)]
    assert all(np.isnan(v) or v < 3.0 for v in septal)
    assert thickness.per_segment_mm[11] > 10.0 or thickness.per_segment_mm[12] > 10.0


def test_swapped_contours_give_no_wall_thickness() -> None:
    """The vial segmentation whose 'wall thickness' was -17 mm: the epicardium inside the endocardium."""
    centre = (60.0, 60.0)
    swapped = FittedContours(endo_px=_circle_px(centre, 30.0), epi_px=_circle_px(centre, 18.0),
                             pixel_spacing_mm=(1.4, 1.4))
    with pytest.raises(AnalysisError, match="epicardium does not lie outside the endocardium"):
        wall_thickness_mm(swapped, None, centre, (50.0, 40.0), "mid")
    with pytest.raises(AnalysisError):
        wall_thickness_mm(swapped, None, centre, (50.0, 40.0), "mid", n_rays=0)
