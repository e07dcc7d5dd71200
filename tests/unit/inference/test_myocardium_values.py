"""Region statistics of maps, on the phantom's true T1 map and on hand-made arrays: missing values, the minimum
pixels a segment needs, and the mid-wall region."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference.errors import AnalysisError, ShapeMismatchError
from inference.myocardium_values import (
    MIN_SEGMENT_PIXELS,
    RegionValues,
    erode,
    mid_wall_mask,
    region_values,
    segment_values,
    wall_depth,
)
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel


def test_values_of_known_array() -> None:
    values = np.arange(16, dtype=np.float64).reshape(4, 4)
    mask = np.zeros((4, 4), dtype=bool)
    mask[1:3, 1:3] = True  # 5, 6, 9, 10
    result = region_values(values, mask, pixel_spacing_mm=(2.0, 1.5))
    assert result.mean == pytest.approx(7.5)
    assert result.median == pytest.approx(7.5)
    assert result.sd == pytest.approx(np.std([5, 6, 9, 10], ddof=1))
    assert result.iqr == pytest.approx(np.percentile([5, 6, 9, 10], 75) - np.percentile([5, 6, 9, 10], 25))
    assert result.n_pixels == 4 and result.area_mm2 == pytest.approx(12.0)


def test_non_finite_values_are_left_out_and_errors_raised() -> None:
    values = np.ones((3, 3))
    values[1, 1] = np.nan
    result = region_values(values, np.ones((3, 3), bool), pixel_spacing_mm=(1.0, 1.0))
    assert result.n_pixels == 8 and result.mean == 1.0
    with pytest.raises(ShapeMismatchError):
        region_values(values, np.ones((3, 4), bool), pixel_spacing_mm=(1.0, 1.0))
    with pytest.raises(AnalysisError):
        region_values(values, np.ones((3, 3), bool), pixel_spacing_mm=(1.0, 1.0), erode_mm=-1.0)


@pytest.mark.parametrize("seed", range(3))
def test_true_t1_map_of_the_phantom(seed: int) -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(seed), SliceLevel.MID, FieldStrength.T1_5)
    spacing = anatomy.geometry.pixel_spacing_mm
    myocardium = anatomy.myocardium_mask
    whole = region_values(anatomy.t1_ms, myocardium, pixel_spacing_mm=spacing)
    assert whole.mean == pytest.approx(float(np.mean(anatomy.t1_ms[myocardium], dtype=np.float64)), rel=1e-9)
    assert whole.n_pixels == int(myocardium.sum())
    # Pixels whose 3x3 neighbourhood is all myocardium hold the pure tissue value (no partial volume).
    pure = ndimage.binary_erosion(myocardium, structure=np.ones((3, 3)))
    tissue_t1_ms = float(np.median(anatomy.t1_ms[pure]))
    eroded = region_values(anatomy.t1_ms, myocardium, pixel_spacing_mm=spacing, erode_mm=1.5 * spacing[0])
    assert eroded.mean == pytest.approx(tissue_t1_ms, rel=1e-4)
    assert eroded.sd < whole.sd and eroded.n_pixels < whole.n_pixels
    per_segment = segment_values(anatomy.t1_ms, anatomy.aha_segment_map, pixel_spacing_mm=spacing)
    assert set(per_segment) == {7, 8, 9, 10, 11, 12}
    assert sum(v.n_pixels for v in per_segment.values()) == whole.n_pixels
    assert sum(v.area_mm2 for v in per_segment.values()) == pytest.approx(whole.area_mm2)


def test_zero_and_negative_values_are_missing_not_zero_ms() -> None:
    """Scanners write 0 for failed pixels in uint16 maps; the node writes NaN. Neither is a T1 of 0 ms."""
    values = np.full((4, 5), 1000.0)
    values[0, :3] = 0.0
    values[1, 0] = np.nan
    values[1, 1] = -5.0
    result = region_values(values, np.ones((4, 5), bool), pixel_spacing_mm=(1.0, 1.0))
    assert result.mean == 1000.0 and result.median == 1000.0 and result.sd == 0.0
    assert result.n_pixels == 15 and result.n_missing == 5 and result.missing_fraction == pytest.approx(0.25)
    assert result.reason is None and result.has_value
    uint16_map = np.where(np.arange(20).reshape(4, 5) % 4 == 0, 0, 1200).astype(np.uint16)
    assert region_values(uint16_map, np.ones((4, 5), bool), pixel_spacing_mm=(1.0, 1.0)).mean == 1200.0


def test_a_segment_with_too_few_valid_pixels_gets_no_value_and_a_reason() -> None:
    values = np.full((10, 30), 1000.0)
    segments = np.zeros((10, 30), dtype=np.uint8)
    segments[:, :10], segments[:, 10:20], segments[:, 20:] = 1, 2, 3
    values[:, 10:20] = np.nan
    values[:7, 10] = 1100.0  # segment 2: 7 of 100 pixels with a value
    values[:, 20:26] = 0.0  # segment 3: 40 of 100 with a value, enough pixels but less than half
    result = segment_values(values, segments, pixel_spacing_mm=(1.0, 1.0))
    assert result[1].mean == 1000.0 and result[1].reason is None and result[1].n_missing == 0
    assert np.isnan(result[2].mean) and np.isnan(result[2].median) and np.isnan(result[2].sd)
    assert result[2].n_pixels == 7 and result[2].n_missing == 93
    assert result[2].reason == f"7 valid pixels, at least {MIN_SEGMENT_PIXELS} needed"
    assert np.isnan(result[3].mean) and result[3].n_pixels == 40
    assert result[3].reason == "only 40 of 100 pixels (40 %) have a value, at least 50 % needed"
    assert not result[3].has_value
    # The same rule can be asked of a whole region; by default one pixel with a value is enough.
    assert region_values(values, segments == 2, pixel_spacing_mm=(1.0, 1.0)).mean == 1100.0
    strict = region_values(values, segments == 2, pixel_spacing_mm=(1.0, 1.0), min_pixels=10, min_valid_fraction=0.5)
    assert np.isnan(strict.mean) and strict.reason is not None
    with pytest.raises(AnalysisError):
        region_values(values, segments == 2, pixel_spacing_mm=(1.0, 1.0), min_valid_fraction=1.5)


def test_region_values_keep_their_old_positional_form() -> None:
    values = RegionValues(1.0, 1.0, 0.0, 0.0, 3, 9.0)
    assert values.n_missing == 0 and values.reason is None and values.missing_fraction == 0.0


def _pure_tissue_t1(anatomy) -> float:
    pure = ndimage.binary_erosion(anatomy.myocardium_mask, structure=np.ones((3, 3)))
    return float(np.median(anatomy.t1_ms[pure]))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("level", list(SliceLevel))
def test_mid_wall_region_reads_the_tissue_without_partial_volume(seed: int, level: SliceLevel) -> None:
    """The phantom's border pixels mix myocardium with blood and fat; the mid-wall region holds none of them."""
    anatomy = make_slice_anatomy(np.random.default_rng(seed), level, FieldStrength.T1_5)
    spacing = anatomy.geometry.pixel_spacing_mm
    myocardium = anatomy.myocardium_mask
    mid_wall = mid_wall_mask(myocardium, anatomy.cavity_mask, spacing)
    assert not (mid_wall & ~myocardium).any()
    assert 0.4 < mid_wall.sum() / myocardium.sum() < 0.75
    tissue_t1_ms = _pure_tissue_t1(anatomy)
    ring = region_values(anatomy.t1_ms, myocardium, pixel_spacing_mm=spacing)
    mid = region_values(anatomy.t1_ms, mid_wall, pixel_spacing_mm=spacing)
    assert mid.mean == pytest.approx(tissue_t1_ms, rel=1e-3)
    assert mid.sd < 0.2 * ring.sd
    # Every segment keeps a mid-wall part, read the same way.
    per_segment = segment_values(anatomy.t1_ms, anatomy.aha_segment_map, pixel_spacing_mm=spacing, within=mid_wall)
    assert set(per_segment) == {int(s) for s in np.unique(anatomy.aha_segment_map) if s > 0}
    for values in per_segment.values():
        assert values.mean == pytest.approx(tissue_t1_ms, rel=1e-3) and values.n_pixels >= MIN_SEGMENT_PIXELS


def test_wall_depth_runs_from_the_endocardium_to_the_epicardium() -> None:
    rows, columns = np.indices((100, 100))
    radius = np.hypot(rows - 50.2, columns - 49.7)
    cavity, myocardium = radius < 20, (radius >= 20) & (radius < 30)
    depth = wall_depth(myocardium, cavity, (1.5, 1.5))
    assert np.isnan(depth[~myocardium]).all()
    inside = myocardium
    expected = (radius[inside] - 20.0) / 10.0  # pixel centres from the border at radius 20 to the one at 30
    assert np.abs(depth[inside] - expected).max() < 0.12
    np.testing.assert_array_equal(np.isnan(wall_depth(myocardium, np.zeros_like(cavity), (1.5, 1.5))), ~myocardium)


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.4, 1.4), (1.2, 1.6)])
@pytest.mark.parametrize("wall_px", [1.5, 2.0, 2.5, 3.0])
def test_a_thin_wall_keeps_at_least_its_centre_line_as_a_closed_ring(
    spacing: tuple[float, float], wall_px: float
) -> None:
    rows, columns = np.indices((90, 90))
    radius_px = np.hypot(rows - 45.3, columns - 44.6)
    cavity = radius_px < 15
    myocardium = (radius_px >= 15) & (radius_px < 15 + wall_px)
    mid_wall = mid_wall_mask(myocardium, cavity, spacing)
    assert mid_wall.any() and not (mid_wall & ~myocardium).any()
    hole = ndimage.binary_fill_holes(mid_wall) & ~mid_wall
    assert hole[45, 45], "the mid-wall region must go all the way round"


def test_a_fixed_1_mm_erosion_removes_nothing_at_mapping_resolution() -> None:
    """Why the reported values no longer come from ERODE_MM: with 1.4 mm pixels every pixel centre lies 1.4 mm or
    more from the nearest outside one, so the erosion kept every border pixel."""
    anatomy = make_slice_anatomy(np.random.default_rng(0), SliceLevel.MID, FieldStrength.T1_5)
    spacing = anatomy.geometry.pixel_spacing_mm
    assert min(spacing) > 1.0
    np.testing.assert_array_equal(erode(anatomy.myocardium_mask, 1.0, spacing), anatomy.myocardium_mask)
    assert mid_wall_mask(anatomy.myocardium_mask, anatomy.cavity_mask, spacing).sum() < anatomy.myocardium_mask.sum()


def test_mid_wall_mask_refuses_bad_input() -> None:
    ring = np.zeros((20, 20), dtype=bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False
    with pytest.raises(AnalysisError):
        mid_wall_mask(ring, np.zeros_like(ring), (1.0, 1.0), keep_fraction=0.0)
    with pytest.raises(ShapeMismatchError):
        mid_wall_mask(ring, ring[:-1], (1.0, 1.0))
    solid = np.zeros((20, 20), dtype=bool)
    solid[5:15, 5:15] = True
    with pytest.raises(AnalysisError, match="no cavity"):
        mid_wall_mask(solid, np.zeros_like(solid), (1.0, 1.0))
    assert not mid_wall_mask(np.zeros_like(ring), np.zeros_like(ring), (1.0, 1.0)).any()
