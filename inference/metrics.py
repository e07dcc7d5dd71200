"""Agreement between two segmentations: overlap of masks and distances between borders, in mm.

Contour distances are measured between closed polygons resampled densely along their arc length, so that they do
not depend on how many points each contour carries. Mask distances are measured between the boundary pixels of the
masks (foreground pixels with a 4-connected background neighbour) through Euclidean distance transforms with the
pixel spacing. Pixel spacing is (row, column) in mm; contour points are (x, y) = (column, row).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from inference.contour_fit import check_spacing, to_mm
from inference.errors import AnalysisError, ShapeMismatchError

LOGGER = logging.getLogger(__name__)

# Dense resampling step as a fraction of the smaller pixel side: the distance error it adds is at most half a step.
RESAMPLING_FRACTION = 0.1
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ShapeMismatchError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two masks; 1 when both are empty.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape.
    """
    a, b = _pair(a, b)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union (Jaccard index) of two masks; 1 when both are empty.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape.
    """
    a, b = _pair(a, b)
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def resample_closed(points_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """Points along a closed polygon at most ``step_mm`` apart, vertices included."""
    points = np.asarray(points_mm, dtype=np.float64)
    following = np.roll(points, -1, axis=0)
    lengths = np.hypot(*(following - points).T)
    counts = np.maximum(1, np.ceil(lengths / step_mm).astype(np.int64))
    segment = np.repeat(np.arange(len(points)), counts)
    starts = np.cumsum(counts) - counts
    fraction = (np.arange(counts.sum()) - np.repeat(starts, counts)) / np.repeat(counts, counts)
    return points[segment] + fraction[:, None] * (following[segment] - points[segment])


def _directed_distances(
    contour_a_px: np.ndarray, contour_b_px: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    spacing = check_spacing(pixel_spacing_mm)
    step_mm = RESAMPLING_FRACTION * min(spacing)
    dense = []
    for contour in (contour_a_px, contour_b_px):
        points = np.asarray(contour, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
            raise AnalysisError(f"a contour must be (N >= 3, 2) points, got shape {points.shape}")
        dense.append(resample_closed(to_mm(points, spacing), step_mm))
    a, b = dense
    a_to_b, _ = cKDTree(b).query(a)
    b_to_a, _ = cKDTree(a).query(b)
    return a_to_b, b_to_a


def hausdorff_mm(contour_a_px: np.ndarray, contour_b_px: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """Symmetric Hausdorff distance in mm between two closed (x, y) contours.

    Raises
    ------
    AnalysisError
        If a contour has fewer than 3 points or the spacing is not positive.
    """
    a_to_b, b_to_a = _directed_distances(contour_a_px, contour_b_px, pixel_spacing_mm)
    return float(max(a_to_b.max(), b_to_a.max()))


def mean_surface_distance_mm(
    contour_a_px: np.ndarray, contour_b_px: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> float:
    """Symmetric mean surface distance in mm: the mean of the two directed mean distances along arc length.

    Raises
    ------
    AnalysisError
        If a contour has fewer than 3 points or the spacing is not positive.
    """
    a_to_b, b_to_a = _directed_distances(contour_a_px, contour_b_px, pixel_spacing_mm)
    return float(0.5 * (a_to_b.mean() + b_to_a.mean()))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-connected background neighbour (pixels outside the image count as background)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=_FOUR_CONNECTED, border_value=0)


def mask_surface_distances_mm(
    mask_a: np.ndarray, mask_b: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> tuple[float, float]:
    """(Hausdorff, mean surface distance) in mm between the boundaries of two masks.

    The mean is the mean of the two directed means over boundary pixels.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape.
    AnalysisError
        If either mask is empty or the spacing is not positive.
    """
    spacing = check_spacing(pixel_spacing_mm)
    a, b = _pair(mask_a, mask_b)
    if not a.any() or not b.any():
        raise AnalysisError(f"both masks need foreground pixels, got {int(a.sum())} and {int(b.sum())}")
    # Every boundary pixel lies in the joint bounding box, so distances computed inside it (padded) are exact.
    rows, columns = np.nonzero(a | b)
    box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
    edge_a, edge_b = boundary(a[box]), boundary(b[box])
    to_b = ndimage.distance_transform_edt(~edge_b, sampling=spacing)[edge_a]
    to_a = ndimage.distance_transform_edt(~edge_a, sampling=spacing)[edge_b]
    return float(max(to_b.max(), to_a.max())), float(0.5 * (to_b.mean() + to_a.mean()))
