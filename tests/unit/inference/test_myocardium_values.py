"""Region statistics of maps, on the phantom's true T1 map and on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from inference.errors import AnalysisError, ShapeMismatchError
from inference.myocardium_values import region_values, segment_values
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
