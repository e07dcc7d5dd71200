"""The short-axis LV plausibility check: real expert masks and the phantom pass, vials, blobs and long axes fail.

Real masks: Sunnybrook Cardiac Data (Radau et al., MICCAI 2009 LV segmentation challenge; CC0), GE 1.5 T cine
short-axis images of heart-failure patients with expert endocardial and epicardial contours (see
tests/shared_data.py and shared/data/README.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from inference.contour_fit import contour_mask
from inference.errors import AnalysisError, ShapeMismatchError
from inference.heart_check import (
    CAVITY_AREA_MM2,
    EPICARDIAL_DIAMETER_MM,
    MAX_ASPECT_RATIO,
    MIN_ENCLOSURE,
    MIN_SOLIDITY,
    WALL_THICKNESS_MM,
    NoLeftVentricleError,
    check_left_ventricle,
    require_left_ventricle,
)
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel
from tests.shared_data import SHARED_DATA

SUNNYBROOK = SHARED_DATA / "sunnybrook"
#: Its epicardial contours do not enclose the endocardial ones (drawn on another frame; see test_point_list.py).
DISPLACED_EPICARDIUM = "SC-HF-I-6"
SPACING = (1.4, 1.4)
# The Sunnybrook images carry UIDs with zero-padded components, which pydicom warns about on access.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")


def _spacing_and_shape(path: Path) -> tuple[tuple[float, float], tuple[int, int]]:
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    return (float(dataset.PixelSpacing[0]), float(dataset.PixelSpacing[1])), (int(dataset.Rows), int(dataset.Columns))


def _sunnybrook_slices(*, with_epicardium: bool) -> list[tuple[str, Path, Path, Path | None]]:
    """(id, image, endocardial contour, epicardial contour or None) of every linked Sunnybrook slice."""
    slices = []
    with (SUNNYBROOK / "link.csv").open() as handle:
        for row in csv.DictReader(handle):
            folder = SUNNYBROOK / "contourfiles" / row["original_id"]
            for endo in sorted((folder / "i-contours").glob("*-icontour-manual.txt")):
                number = int(endo.name.split("-")[2])
                epi = folder / "o-contours" / endo.name.replace("icontour", "ocontour")
                image = SUNNYBROOK / "dicoms" / row["patient_id"] / f"{number}.dcm"
                if with_epicardium and (not epi.is_file() or row["original_id"] == DISPLACED_EPICARDIUM):
                    continue
                slices.append((f"{row['original_id']}/{number}", image, endo, epi if epi.is_file() else None))
    return slices


SUNNYBROOK_RINGS = _sunnybrook_slices(with_epicardium=True)
SUNNYBROOK_CAVITIES = _sunnybrook_slices(with_epicardium=False)


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius_px: float) -> np.ndarray:
    rows, columns = np.indices(shape)
    return np.hypot(rows - centre[0], columns - centre[1]) < radius_px


def _ring(shape=(128, 128), centre=(64.3, 63.7), inner_px=14.0, outer_px=20.0) -> tuple[np.ndarray, np.ndarray]:
    cavity = _disk(shape, centre, inner_px)
    return _disk(shape, centre, outer_px) & ~cavity, cavity


def test_a_synthetic_ring_passes_with_its_measurements() -> None:
    myocardium, cavity = _ring()
    result = check_left_ventricle(myocardium, cavity, SPACING)
    assert result.passed and result.reason is None
    assert result.myocardium_pieces == 1 and result.enclosure == 1.0
    assert result.cavity_area_mm2 == pytest.approx(np.pi * (14 * 1.4) ** 2, rel=0.05)
    assert result.epicardial_diameter_mm == pytest.approx(2 * 20 * 1.4, rel=0.03)
    assert result.wall_thickness_mm == pytest.approx(6 * 1.4, abs=0.5)
    assert result.aspect_ratio < 1.05 and result.solidity > 0.95 and result.cavity_offset < 0.05
    # Without a cavity mask the hole of the ring is the cavity.
    assert check_left_ventricle(myocardium, np.zeros_like(cavity), SPACING).passed


def test_every_real_sunnybrook_short_axis_ring_passes() -> None:
    assert len(SUNNYBROOK_RINGS) >= 35
    for name, image, endo, epi in SUNNYBROOK_RINGS:
        assert epi is not None
        spacing, shape = _spacing_and_shape(image)
        cavity = contour_mask(np.loadtxt(endo), shape)
        myocardium = contour_mask(np.loadtxt(epi), shape) & ~cavity
        result = check_left_ventricle(myocardium, cavity, spacing)
        assert result.passed, f"{name}: {result.reason}"


def test_the_smallest_real_apical_cavities_pass_inside_a_thin_wall() -> None:
    """Apical Sunnybrook cavities (from 1.6 cm2) drawn without an epicardium, inside a 4 mm wall made around them."""
    cavities = []
    for name, image, endo, _ in SUNNYBROOK_CAVITIES:
        spacing, shape = _spacing_and_shape(image)
        cavity = contour_mask(np.loadtxt(endo), shape)
        cavities.append((float(cavity.sum()) * spacing[0] * spacing[1], name, cavity, spacing))
    cavities.sort(key=lambda item: item[0])
    assert cavities[0][0] < 200.0  # the data really hold apical cavities below 2 cm2
    for area_mm2, name, cavity, spacing in cavities[:5]:
        assert area_mm2 > 2 * CAVITY_AREA_MM2[0]
        distance_mm = ndimage.distance_transform_edt(~cavity, sampling=spacing)
        myocardium = ~cavity & (distance_mm <= 4.0)
        result = check_left_ventricle(myocardium, cavity, spacing)
        assert result.passed, f"{name} ({area_mm2:.0f} mm2): {result.reason}"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("level", list(SliceLevel))
def test_phantom_anatomy_passes(seed: int, level: SliceLevel) -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(seed), level, FieldStrength.T1_5)
    result = check_left_ventricle(anatomy.myocardium_mask, anatomy.cavity_mask, anatomy.geometry.pixel_spacing_mm)
    assert result.passed, result.reason


def test_an_open_basal_ring_passes_while_most_of_the_cavity_is_walled() -> None:
    myocardium, cavity = _ring()
    rows, columns = np.indices(myocardium.shape)
    gap = (np.abs(columns - 63.7) < 4) & (rows < 64)  # an outflow-tract gap of about 11 mm
    result = check_left_ventricle(myocardium & ~gap, cavity | (gap & _disk(cavity.shape, (64.3, 63.7), 20)), SPACING)
    assert result.passed, result.reason
    assert MIN_ENCLOSURE <= result.enclosure < 1.0


def test_empty_segmentation_fails() -> None:
    empty = np.zeros((64, 64), dtype=bool)
    result = check_left_ventricle(empty, empty, SPACING)
    assert not result.passed and result.reason == "the segmentation found no myocardium"


def test_separate_vials_fail() -> None:
    shape = (160, 160)
    vials = np.zeros(shape, dtype=bool)
    for row in (40, 80, 120):
        for column in (40, 80, 120):
            vials |= _disk(shape, (row, column), 12)
    result = check_left_ventricle(vials, np.zeros(shape, dtype=bool), SPACING)
    assert not result.passed and "9 separate pieces" in str(result.reason)


def test_a_vial_beside_another_as_cavity_fails() -> None:
    """The segmentation of a vial phantom that gave a negative wall thickness: the 'cavity' lies beside the wall."""
    shape = (160, 160)
    myocardium = _disk(shape, (80, 60), 15)
    cavity = _disk(shape, (80, 92), 15)
    result = check_left_ventricle(myocardium, cavity, SPACING)
    assert not result.passed
    assert result.enclosure < MIN_ENCLOSURE and "surrounds only" in str(result.reason)


def test_a_solid_disk_fails_without_a_cavity_and_with_a_pinhole() -> None:
    shape = (120, 120)
    disk = _disk(shape, (60, 60), 20)
    result = check_left_ventricle(disk, np.zeros(shape, dtype=bool), SPACING)
    assert not result.passed and "no cavity" in str(result.reason)
    pinhole = disk.copy()
    pinhole[59:62, 59:62] = False  # 9 px = 18 mm2: a fit failure inside a vial, not a blood pool
    result = check_left_ventricle(pinhole, np.zeros(shape, dtype=bool), SPACING)
    assert not result.passed and result.cavity_area_mm2 < CAVITY_AREA_MM2[0] and "cavity measures" in str(result.reason)


def test_an_elongated_blob_fails() -> None:
    rows, columns = np.indices((200, 200))
    outer = ((rows - 100) / 20.0) ** 2 + ((columns - 100) / 60.0) ** 2 < 1
    inner = ((rows - 100) / 13.0) ** 2 + ((columns - 100) / 52.0) ** 2 < 1
    result = check_left_ventricle(outer & ~inner, inner, SPACING)
    assert not result.passed and result.aspect_ratio > MAX_ASPECT_RATIO
    assert "times as long as it is wide" in str(result.reason)


def test_a_long_axis_lv_fails() -> None:
    """Two-chamber-like LV: a thick U around an elongated cavity, open at the mitral valve."""
    rows, columns = np.indices((200, 200))
    outer = ((rows - 100) / 40.0) ** 2 + ((columns - 100) / 22.0) ** 2 < 1
    inner = ((rows - 100) / 33.0) ** 2 + ((columns - 100) / 15.0) ** 2 < 1
    base = rows < 75
    result = check_left_ventricle(outer & ~inner & ~base, inner & ~base, SPACING)
    assert not result.passed and result.aspect_ratio > MAX_ASPECT_RATIO


@pytest.mark.parametrize(
    ("inner_px", "outer_px", "spacing", "words"),
    [
        (35.0, 42.0, (1.4, 1.4), "across"),  # 118 mm across a 75 cm2 cavity: a body, not a heart
        (14.0, 15.3, (1.4, 1.4), "thick"),  # a wall of 1.8 mm
        (2.5, 12.0, (1.4, 1.4), "cavity measures"),  # 0.4 cm2 inside a 13 mm wall
    ],
)
def test_implausible_sizes_fail(inner_px: float, outer_px: float, spacing: tuple[float, float], words: str) -> None:
    myocardium, cavity = _ring(shape=(200, 200), centre=(100.2, 99.6), inner_px=inner_px, outer_px=outer_px)
    result = check_left_ventricle(myocardium, cavity, spacing)
    assert not result.passed and words in str(result.reason)
    bounds = {"across": EPICARDIAL_DIAMETER_MM, "thick": WALL_THICKNESS_MM, "cavity measures": CAVITY_AREA_MM2}[words]
    measured = {"across": result.epicardial_diameter_mm, "thick": result.wall_thickness_mm,
                "cavity measures": result.cavity_area_mm2}[words]
    assert not bounds[0] <= measured <= bounds[1]


def test_a_crescent_fails_on_convexity_or_enclosure() -> None:
    shape = (160, 160)
    crescent = _disk(shape, (80, 80), 30) & ~_disk(shape, (80, 100), 26)
    result = check_left_ventricle(crescent, _disk(shape, (80, 100), 26), SPACING)
    assert not result.passed
    assert result.enclosure < MIN_ENCLOSURE or result.solidity < MIN_SOLIDITY


def test_require_raises_no_left_ventricle_found_with_the_reason() -> None:
    empty = np.zeros((64, 64), dtype=bool)
    with pytest.raises(NoLeftVentricleError, match=r"^no left ventricle found: the segmentation found no myocardium$"):
        require_left_ventricle(empty, empty, SPACING)
    assert issubclass(NoLeftVentricleError, AnalysisError)
    myocardium, cavity = _ring()
    assert require_left_ventricle(myocardium, cavity, SPACING).passed
    with pytest.raises(ShapeMismatchError):
        check_left_ventricle(myocardium, cavity[:-1], SPACING)
    with pytest.raises(AnalysisError):
        check_left_ventricle(myocardium, cavity, (0.0, 1.4))
