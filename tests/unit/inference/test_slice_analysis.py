"""One slice through the node's models: values only from pixels that have one, read in the mid-wall region, and
no analysis at all when the segmentation is not a short-axis LV."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.errors import AnalysisError
from inference.heart_check import NoLeftVentricleError
from inference.mapping import MapKind
from inference.model_set import ModelSet, load_models
from inference.myocardium_values import mid_wall_mask, region_values
from inference.slice_analysis import VALUE_REGION, SliceAnalysis, analyse_slice
from training.phantom_slices import study_cases

PHANTOM_SEED = 58  # test seeds stay below 100000


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return load_models(device="cpu", threads=1)


@pytest.fixture(scope="module")
def mid_case():
    return next(c for c in study_cases(PHANTOM_SEED, 0) if c.is_t1 and c.level.value == "mid")


@pytest.fixture(scope="module")
def reference(models: ModelSet, mid_case) -> SliceAnalysis:
    return analyse_slice(mid_case.map_ms, MapKind.T1, mid_case.pixel_spacing_mm, "mid", models)


def _knocked_out(map_ms: np.ndarray, myocardium: np.ndarray, fraction: float, fill: float) -> tuple[np.ndarray, int]:
    """The map with every k-th myocardium pixel set to ``fill`` (a failed fit), about ``fraction`` of them."""
    knocked = np.asarray(map_ms, dtype=np.float32).copy()
    rows, columns = np.nonzero(myocardium)
    step = int(round(1.0 / fraction))
    knocked[rows[::step], columns[::step]] = fill
    return knocked, len(rows[::step])


@pytest.mark.parametrize("fill", [np.nan, 0.0], ids=["nan", "zero"])
def test_failed_pixels_are_missing_not_zero_ms(models: ModelSet, mid_case, reference: SliceAnalysis,
                                               fill: float) -> None:
    """A sixth of the myocardium without a value (NaN from the node's fit, 0 from a scanner's uint16 map): the old
    analysis read them as T1 = 0 ms and reported a mean a sixth too low; now they are missing and the mean is that
    of the pixels with a value. (The failed pixels also change what the segmentation model sees, so the region is
    compared with the map itself, not with the analysis of the intact map.)"""
    knocked, _ = _knocked_out(mid_case.map_ms, reference.segmentation.myocardium_mask, 1 / 6, fill)
    analysis = analyse_slice(knocked, MapKind.T1, mid_case.pixel_spacing_mm, "mid", models)
    assert not np.isnan(analysis.map_ms).any()  # what the models and the images get
    spacing = analysis.pixel_spacing_mm
    myocardium, cavity = analysis.segmentation.myocardium_mask, analysis.segmentation.cavity_mask
    mid_wall = mid_wall_mask(myocardium, cavity, spacing)
    failed = ~(knocked > 0)  # NaN compares False
    intact = np.asarray(mid_case.map_ms, dtype=np.float64)
    values = analysis.myocardium_values
    assert values.mean == pytest.approx(float(intact[mid_wall & ~failed].mean()), rel=1e-5)
    assert values.mean == pytest.approx(float(intact[mid_wall].mean()), rel=0.01)  # missing pixels bias nothing
    assert values.n_missing == int((mid_wall & failed).sum()) > 0 and values.reason is None
    zeros_counted = float(np.where(failed, 0.0, intact)[mid_wall].mean())
    assert zeros_counted < 0.9 * values.mean  # what the old analysis reported
    assert analysis.missing_fraction == pytest.approx((myocardium & failed).sum() / myocardium.sum())
    assert 0.1 < analysis.missing_fraction < 0.25
    assert analysis.ring_values.n_missing == int((myocardium & failed).sum())
    for segment, segment_values in analysis.segment_values.items():
        region = mid_wall & (analysis.aha_segment_map == segment)
        assert segment_values.mean == pytest.approx(float(intact[region & ~failed].mean()), rel=1e-5)
        assert segment_values.n_missing == int((region & failed).sum())


def test_values_come_from_the_mid_wall_and_the_ring_from_the_whole_myocardium(reference: SliceAnalysis) -> None:
    assert reference.value_region == VALUE_REGION == "mid-wall (central 60 % of the wall)"
    spacing = reference.pixel_spacing_mm
    myocardium = reference.segmentation.myocardium_mask
    mid_wall = mid_wall_mask(myocardium, reference.segmentation.cavity_mask, spacing)
    expected = region_values(reference.map_ms, mid_wall, pixel_spacing_mm=spacing)
    assert reference.myocardium_values.mean == pytest.approx(expected.mean)
    assert reference.myocardium_values.area_mm2 == pytest.approx(expected.area_mm2)
    assert reference.ring_values.area_mm2 == pytest.approx(float(myocardium.sum()) * spacing[0] * spacing[1])
    assert reference.myocardium_values.area_mm2 < 0.8 * reference.ring_values.area_mm2
    # Partial volume with blood (T1 about 1.6 times myocardium) raises the ring's spread, not the mid-wall's.
    assert reference.myocardium_values.sd < reference.ring_values.sd
    assert sum(v.n_pixels + v.n_missing for v in reference.segment_values.values()) == int(mid_wall.sum())
    assert reference.wall_thickness.mean_mm > 0 and reference.wall_thickness.invalid_ray_fraction < 0.5


def test_a_map_without_a_heart_is_not_analysed(models: ModelSet, mid_case) -> None:
    spacing = mid_case.pixel_spacing_mm
    shape = mid_case.map_ms.shape
    with pytest.raises(NoLeftVentricleError, match=r"^no left ventricle found: the segmentation found no myocardium"):
        analyse_slice(np.zeros(shape, dtype=np.float32), MapKind.T1, spacing, "mid", models)
    rows, columns = np.indices(shape)
    liver = (((rows - shape[0] / 2) / (50 / spacing[0])) ** 2 + ((columns - shape[1] / 2) / (75 / spacing[1])) ** 2) < 1
    noise = np.random.default_rng(1).normal(0.0, 30.0, shape)
    with pytest.raises(NoLeftVentricleError, match=r"^no left ventricle found: "):
        analyse_slice(np.where(liver, 600.0 + noise, np.nan), MapKind.T1, spacing, "mid", models)
    assert issubclass(NoLeftVentricleError, AnalysisError)


def test_a_long_axis_view_is_not_analysed(models: ModelSet) -> None:
    """A two-chamber-like LV (myocardium 1000 ms around 1600 ms blood, open at the base): round it is not."""
    rows, columns = np.indices((192, 192))
    outer = ((rows - 96) / 55.0) ** 2 + ((columns - 96) / 30.0) ** 2 < 1
    inner = ((rows - 96) / 45.0) ** 2 + ((columns - 96) / 21.0) ** 2 < 1
    map_ms = np.where(outer, 1000.0, 0.0)
    map_ms[inner | (outer & (rows < 70) & (np.abs(columns - 96) < 22))] = 1600.0
    map_ms[rows < 55] = 0.0
    map_ms = map_ms + (map_ms > 0) * np.random.default_rng(0).normal(0.0, 30.0, map_ms.shape)
    # Which shape check refuses it depends on what the model draws there (too long a ring, too little of one).
    with pytest.raises(NoLeftVentricleError, match=r"^no left ventricle found: the (ring is .* times as long|"
                                                   r"myocardium surrounds only)"):
        analyse_slice(map_ms, MapKind.T1, (1.4, 1.4), "mid", models)


def test_a_vial_phantom_map_is_not_a_heart(models: ModelSet, tmp_path) -> None:
    """Nine vials in a water bath, as the scanner maps them: whatever ring the segmentation draws, no myocardial values
    are reported (the shape checks or the quality model refuse it)."""
    script = Path(sys.executable).with_name("myomap")
    subprocess.run([str(script), "phantom", "--out", str(tmp_path), "--studies", "1", "--seed", "7", "--vials",
                    "--vendor", "siemens", "--readers", "", "--workers", "1"], check=True, capture_output=True,
                   timeout=300)
    maps = [pydicom.dcmread(p) for p in sorted(tmp_path.glob("study_0000/vials/*_map/*.dcm"))]
    maps = [ds for ds in maps if int(ds.get("SamplesPerPixel", 1)) == 1]
    assert len(maps) == 2  # MOLLI and ShMOLLI
    for ds in maps:
        map_ms = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1.0))
        with pytest.raises(NoLeftVentricleError, match="^no left ventricle found"):
            analyse_slice(map_ms, MapKind.T1, tuple(float(v) for v in ds.PixelSpacing), "mid", models)
