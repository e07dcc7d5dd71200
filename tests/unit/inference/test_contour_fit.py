"""Contour fitting: dominant points, component choice, rasterisation, and round trips of phantom and real contours."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from inference import contour_fit
from inference.contour_fit import (
    ContourFitError,
    contour_mask,
    dominant_points,
    fit_contours,
    is_closed_ring,
    select_component,
)
from inference.metrics import dice, hausdorff_mm
from phantom.anatomy import make_slice_anatomy
from phantom.model import FieldStrength, SliceLevel
from phantom.readers import myocardium_mask as phantom_myocardium_mask
from tests.shared_data import SHARED_DATA

SUNNYBROOK = SHARED_DATA / "sunnybrook"


def test_dominant_points_of_a_square_are_its_corners() -> None:
    side = np.arange(0.0, 20.0)
    square = np.concatenate(
        [
            np.stack([side, np.zeros(20)], axis=1),
            np.stack([np.full(20, 20.0), side], axis=1),
            np.stack([20.0 - side, np.full(20, 20.0)], axis=1),
            np.stack([np.zeros(20), 20.0 - side], axis=1),
        ]
    )
    corners = square[dominant_points(square)]
    assert sorted(map(tuple, corners)) == [(0.0, 0.0), (0.0, 20.0), (20.0, 0.0), (20.0, 20.0)]



@pytest.mark.parametrize("noise_px", [0.0, 0.4, 2.0])
def test_regions_of_support_sought_in_two_reaches_are_those_of_one_search(noise_px: float) -> None:
    # Long straight runs (k beyond the first reach) and noisy curves (k of 1-3) alike.
    rng = np.random.default_rng(7)
    for points_on_curve in (12, 80, 240, 400):
        angles = np.linspace(0.0, 2.0 * np.pi, points_on_curve, endpoint=False)
        radius = 30.0 + 6.0 * np.cos(3.0 * angles) + rng.normal(0.0, noise_px, points_on_curve)
        curve = np.round(np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1))
        square = np.concatenate([np.stack([np.arange(60.0), np.zeros(60)], axis=1),
                                 np.stack([np.full(60, 60.0), np.arange(60.0)], axis=1),
                                 np.stack([60.0 - np.arange(60.0), np.full(60, 60.0)], axis=1),
                                 np.stack([np.zeros(60), 60.0 - np.arange(60.0)], axis=1)])
        for points in (curve, square):
            max_k = max(1, len(points) // 2 - 1)
            whole = np.minimum(contour_fit._first_stop(points, np.arange(len(points)), max_k), max_k)
            np.testing.assert_array_equal(contour_fit._region_of_support(points, max_k), whole)

def test_dominant_points_reject_short_contours() -> None:
    with pytest.raises(ContourFitError):
        dominant_points(np.zeros((4, 2)))


def test_select_component_skips_elongated_regions() -> None:
    mask = np.zeros((60, 60), dtype=bool)
    mask[2:6, 0:60] = True  # 240 px, 15:1
    mask[20:32, 20:34] = True  # 168 px, round enough
    mask[40:45, 40:45] = True  # 25 px
    chosen = select_component(mask)
    assert chosen.sum() == 168 and chosen[25, 25]
    with pytest.raises(ContourFitError):
        select_component(np.zeros((5, 5), dtype=bool))


def test_contour_mask_matches_the_phantom_convention() -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(11), SliceLevel.MID, FieldStrength.T1_5)
    shape = anatomy.label_map.shape
    ours = contour_mask(anatomy.epi_contour_px, shape) & ~contour_mask(anatomy.endo_contour_px, shape)
    np.testing.assert_array_equal(ours, phantom_myocardium_mask(shape, anatomy.endo_contour_px, anatomy.epi_contour_px))
    assert dice(ours, anatomy.myocardium_mask) > 0.99


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", list(SliceLevel))
def test_fit_on_phantom_truth_masks(seed: int, level: SliceLevel) -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(seed), level, FieldStrength.T1_5)
    spacing = anatomy.geometry.pixel_spacing_mm
    fitted = fit_contours(anatomy.cavity_mask, anatomy.myocardium_mask, spacing, n_points=128)
    assert fitted.endo_px.shape == (128, 2) and fitted.epi_px.shape == (128, 2)
    endo_px = hausdorff_mm(fitted.endo_px, anatomy.endo_contour_px, (1.0, 1.0))
    epi_px = hausdorff_mm(fitted.epi_px, anatomy.epi_contour_px, (1.0, 1.0))
    assert endo_px < 1.5 and epi_px < 1.5
    np.testing.assert_allclose(fitted.endo_mm, fitted.endo_px * np.array(spacing)[::-1])


def test_open_ring_is_closed_by_the_convex_hull() -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(3), SliceLevel.MID, FieldStrength.T1_5)
    myocardium = anatomy.myocardium_mask.copy()
    cx, cy = anatomy.lv_centre_px
    rows, columns = np.nonzero(myocardium)
    gap = (np.abs(rows - cy) < 3) & (columns > cx)  # cut the lateral wall
    myocardium[rows[gap], columns[gap]] = False
    spacing = anatomy.geometry.pixel_spacing_mm
    fitted = fit_contours(np.zeros_like(myocardium), myocardium, spacing)
    # The hull bridges the gap close to where the endocardium ran: within the trabeculation and pixel error.
    assert hausdorff_mm(fitted.endo_px, anatomy.endo_contour_px, (1.0, 1.0)) < 2.5
    assert dice(contour_mask(fitted.endo_px, myocardium.shape), anatomy.cavity_mask) > 0.9


def test_open_ring_with_a_cavity_mask_uses_the_hull_of_the_cavity() -> None:
    anatomy = make_slice_anatomy(np.random.default_rng(5), SliceLevel.BASAL, FieldStrength.T1_5)
    myocardium = anatomy.myocardium_mask.copy()
    cx, cy = anatomy.lv_centre_px
    rows, columns = np.nonzero(myocardium)
    gap = (np.abs(columns - cx) < 3) & (rows > cy)  # cut the inferior wall
    myocardium[rows[gap], columns[gap]] = False
    assert not is_closed_ring(myocardium)
    fitted = fit_contours(anatomy.cavity_mask, myocardium, anatomy.geometry.pixel_spacing_mm)
    hull_cavity = contour_mask(fitted.endo_px, myocardium.shape)
    assert dice(hull_cavity, anatomy.cavity_mask) > 0.95
    assert hull_cavity.sum() >= 0.99 * anatomy.cavity_mask.sum()  # a hull never cuts into the cavity


def test_a_wall_fragment_cannot_be_closed() -> None:
    mask = np.zeros((80, 80), dtype=bool)
    mask[20:60, 30:36] = True  # a 40 x 6 bar is too elongated, nothing is left to fit
    with pytest.raises(ContourFitError):
        fit_contours(np.zeros_like(mask), mask, (1.0, 1.0))
    arc = np.zeros((80, 80), dtype=bool)
    y, x = np.mgrid[0:80, 0:80]
    radius = np.hypot(x - 40, y - 40)
    arc[(radius > 20) & (radius < 26) & (x < 40)] = True  # half a ring: a gap far wider than any closing bridges
    with pytest.raises(ContourFitError):
        fit_contours(np.zeros_like(arc), arc, (1.0, 1.0))


def _sunnybrook(image: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[int, int]]:
    contours = SUNNYBROOK / "contourfiles" / "SC-HF-I-1"
    endo = np.loadtxt(contours / "i-contours" / f"IM-0001-{image:04d}-icontour-manual.txt")
    epi = np.loadtxt(contours / "o-contours" / f"IM-0001-{image:04d}-ocontour-manual.txt")
    dataset = pydicom.dcmread(SUNNYBROOK / "dicoms" / "SCD0000101" / f"{image}.dcm")
    spacing = (float(dataset.PixelSpacing[0]), float(dataset.PixelSpacing[1]))
    return endo, epi, spacing, (int(dataset.Rows), int(dataset.Columns))


@pytest.mark.parametrize("image", [59, 99])
def test_sunnybrook_expert_contours_round_trip(image: int) -> None:
    """Expert contours (Sunnybrook Cardiac Data, Radau et al. 2009, CC0) -> masks -> fitted contours."""
    endo, epi, spacing, shape = _sunnybrook(image)
    cavity = contour_mask(endo, shape)
    myocardium = contour_mask(epi, shape) & ~cavity
    fitted = fit_contours(cavity, myocardium, spacing)
    endo_px = hausdorff_mm(fitted.endo_px, endo, (1.0, 1.0))
    epi_px = hausdorff_mm(fitted.epi_px, epi, (1.0, 1.0))
    print(f"Sunnybrook image {image}: Hausdorff endo {endo_px:.2f} px, epi {epi_px:.2f} px")
    assert endo_px < 2.0 and epi_px < 2.0
