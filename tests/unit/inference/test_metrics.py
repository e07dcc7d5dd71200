"""Overlap and distance metrics against SimpleITK, used here only as an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from scipy import ndimage
from scipy.spatial.distance import directed_hausdorff

from inference.contour_fit import border_contour, contour_mask
from inference.errors import AnalysisError, ShapeMismatchError
from inference.metrics import (
    dice,
    hausdorff_mm,
    iou,
    mask_surface_distances_mm,
    mean_surface_distance_mm,
    resample_closed,
)
from tests.shared_data import SHARED_DATA

SPACINGS = [(1.0, 1.0), (1.25, 1.25), (1.4, 0.9)]


def random_blob(rng: np.random.Generator, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    """A smooth random blob: thresholded Gaussian-filtered noise inside an ellipse, largest component kept."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma=6.0)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    cy, cx = shape[0] / 2 + rng.uniform(-5, 5), shape[1] / 2 + rng.uniform(-5, 5)
    ellipse = ((x - cx) / rng.uniform(18, 30)) ** 2 + ((y - cy) / rng.uniform(18, 30)) ** 2
    field = 1.0 - ellipse + 4.0 * noise
    labels, count = ndimage.label(field > 0.3)
    sizes = ndimage.sum_labels(np.ones(shape), labels, np.arange(1, count + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def sitk_image(mask: np.ndarray, spacing_mm: tuple[float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((spacing_mm[1], spacing_mm[0]))  # SimpleITK spacing is (x, y)
    return image


def sitk_surface_distances(a: np.ndarray, b: np.ndarray, spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """(Hausdorff, symmetric mean) between mask boundaries, SimpleITK only."""
    image_a, image_b = sitk_image(a, spacing_mm), sitk_image(b, spacing_mm)
    edge_a, edge_b = sitk.LabelContour(image_a), sitk.LabelContour(image_b)
    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(edge_a, edge_b)
    means = []
    for edge, other in ((edge_a, image_b), (edge_b, image_a)):
        distance = sitk.SignedMaurerDistanceMap(
            other, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        on_edge = sitk.GetArrayFromImage(edge) > 0
        means.append(np.abs(sitk.GetArrayFromImage(distance))[on_edge].mean())
    return hausdorff.GetHausdorffDistance(), 0.5 * (means[0] + means[1])


@pytest.mark.parametrize("seed", range(6))
def test_dice_and_iou_match_simpleitk(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = random_blob(rng), random_blob(rng)
    overlap = sitk.LabelOverlapMeasuresImageFilter()
    overlap.Execute(sitk_image(a, (1.0, 1.0)), sitk_image(b, (1.0, 1.0)))
    assert dice(a, b) == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12)
    assert iou(a, b) == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12)


def test_overlap_edge_cases() -> None:
    empty = np.zeros((4, 4), dtype=bool)
    full = np.ones((4, 4), dtype=bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(full, empty) == 0.0 and iou(full, empty) == 0.0
    with pytest.raises(ShapeMismatchError):
        dice(full, np.ones((4, 5), dtype=bool))


@pytest.mark.parametrize("seed", range(6))
def test_mask_distances_match_simpleitk(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    spacing = SPACINGS[seed % len(SPACINGS)]
    a, b = random_blob(rng), random_blob(rng)
    hausdorff, mean = mask_surface_distances_mm(a, b, spacing)
    reference_hausdorff, reference_mean = sitk_surface_distances(a, b, spacing)
    # Same boundary pixels: the Hausdorff distance agrees to rounding. The Maurer map measures from outside to the
    # nearest foreground pixel, not only to 4-connected boundary pixels, so the means agree within half a diagonal.
    assert hausdorff == pytest.approx(reference_hausdorff, abs=1e-6)
    assert mean == pytest.approx(reference_mean, abs=0.5 * float(np.hypot(*spacing)))


@pytest.mark.parametrize("seed", range(6))
def test_contour_distances_match_simpleitk(seed: int) -> None:
    """Contours against the SimpleITK distances of their rasterised masks, within one pixel diagonal: a boundary
    pixel centre lies up to about one pixel inside its polygon."""
    rng = np.random.default_rng(200 + seed)
    spacing = SPACINGS[seed % len(SPACINGS)]
    a, b = random_blob(rng), random_blob(rng)
    contour_a, contour_b = border_contour(a), border_contour(b)
    reference_hausdorff, reference_mean = sitk_surface_distances(
        contour_mask(contour_a, a.shape), contour_mask(contour_b, b.shape), spacing
    )
    diagonal_mm = float(np.hypot(*spacing))
    hausdorff = hausdorff_mm(contour_a, contour_b, spacing)
    mean = mean_surface_distance_mm(contour_a, contour_b, spacing)
    print(
        f"seed {seed}: Hausdorff {hausdorff:.2f} vs {reference_hausdorff:.2f} mm, "
        f"MSD {mean:.2f} vs {reference_mean:.2f} mm"
    )
    assert abs(hausdorff - reference_hausdorff) <= diagonal_mm
    assert abs(mean - reference_mean) <= 0.5 * diagonal_mm


@pytest.mark.parametrize("seed", range(4))
def test_contour_hausdorff_matches_scipy_on_dense_points(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    spacing = (1.3, 0.8)
    contour_a, contour_b = border_contour(random_blob(rng)), border_contour(random_blob(rng))
    scale = np.array([spacing[1], spacing[0]])
    dense_a = resample_closed(contour_a * scale, 0.01)
    dense_b = resample_closed(contour_b * scale, 0.01)
    reference = max(directed_hausdorff(dense_a, dense_b)[0], directed_hausdorff(dense_b, dense_a)[0])
    assert hausdorff_mm(contour_a, contour_b, spacing) == pytest.approx(reference, abs=0.05 * min(spacing))


def test_distances_of_known_shapes() -> None:
    theta = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    inner = np.stack([50 + 10 * np.cos(theta), 50 + 10 * np.sin(theta)], axis=1)
    outer = np.stack([50 + 13 * np.cos(theta), 50 + 13 * np.sin(theta)], axis=1)
    assert hausdorff_mm(inner, outer, (2.0, 2.0)) == pytest.approx(6.0, abs=0.01)
    assert mean_surface_distance_mm(inner, outer, (2.0, 2.0)) == pytest.approx(6.0, abs=0.01)
    assert hausdorff_mm(inner, inner[::-1], (1.0, 1.0)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(AnalysisError):
        hausdorff_mm(inner, outer, (0.0, 1.0))
    with pytest.raises(AnalysisError):
        mask_surface_distances_mm(np.zeros((5, 5), bool), np.ones((5, 5), bool), (1.0, 1.0))


def test_sunnybrook_expert_contours_match_simpleitk() -> None:
    """Expert endo- against epicardial contour of a real slice (Sunnybrook Cardiac Data, CC0)."""
    folder = SHARED_DATA / "sunnybrook" / "contourfiles" / "SC-HF-I-1"
    endo = np.loadtxt(folder / "i-contours" / "IM-0001-0059-icontour-manual.txt")
    epi = np.loadtxt(folder / "o-contours" / "IM-0001-0059-ocontour-manual.txt")
    spacing = (1.3671875, 1.3671875)
    shape = (256, 256)
    reference_hausdorff, reference_mean = sitk_surface_distances(
        contour_mask(endo, shape), contour_mask(epi, shape), spacing
    )
    hausdorff = hausdorff_mm(endo, epi, spacing)
    mean = mean_surface_distance_mm(endo, epi, spacing)
    print(
        f"Sunnybrook endo-epi: Hausdorff {hausdorff:.2f} vs {reference_hausdorff:.2f} mm, "
        f"MSD {mean:.2f} vs {reference_mean:.2f} mm"
    )
    diagonal_mm = float(np.hypot(*spacing))
    assert abs(hausdorff - reference_hausdorff) <= diagonal_mm
    assert abs(mean - reference_mean) <= 0.5 * diagonal_mm
    assert 3.0 < mean < 20.0  # a wall thickness, not zero and not a misread file
