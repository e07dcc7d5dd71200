"""Summary statistics of a map (T1 or T2, ms) inside the myocardium or its AHA segments.

An optional erosion drops the border zone, where partial volume with blood or fat biases the values: a pixel is
kept when its centre lies more than ``erode_mm`` from the nearest pixel centre outside the region.
Pixel spacing is (row, column) in mm. Non-finite map values (failed fits) are left out of every statistic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.contour_fit import check_spacing
from inference.errors import AnalysisError, ShapeMismatchError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionValues:
    """Statistics of a region in the units of the map (ms); NaN when it holds no finite value.

    ``n_pixels`` counts the pixels with finite values, ``area_mm2`` the area of the region after erosion.
    """

    mean: float
    median: float
    sd: float  # sample standard deviation (ddof 1)
    iqr: float  # 75th minus 25th percentile
    n_pixels: int
    area_mm2: float


def _check(map_ms: np.ndarray, mask: np.ndarray, erode_mm: float) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(map_ms, dtype=np.float64)
    region = np.asarray(mask)
    if values.shape != region.shape or values.ndim != 2:
        raise ShapeMismatchError(f"map {values.shape} and mask {region.shape} must be the same 2-D shape")
    if not np.isfinite(erode_mm) or erode_mm < 0:
        raise AnalysisError(f"erode_mm must be a finite number >= 0, got {erode_mm}")
    return values, region


def erode(mask: np.ndarray, erode_mm: float, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """Pixels of ``mask`` whose centre lies more than ``erode_mm`` from any pixel centre outside it."""
    mask = np.asarray(mask, dtype=bool)
    if erode_mm <= 0:
        return mask
    if not mask.any():
        return mask
    # The nearest outside pixel lies within the bounding box grown by one pixel (the image edge counts as outside).
    rows, columns = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
    distance = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=check_spacing(pixel_spacing_mm))
    kept = np.zeros_like(mask)
    kept[box] = mask[box] & (distance[1:-1, 1:-1] > erode_mm)
    return kept


def _statistics(values: np.ndarray, region: np.ndarray, pixel_area_mm2: float) -> RegionValues:
    inside = values[region]
    finite = inside[np.isfinite(inside)]
    area = float(np.count_nonzero(region)) * pixel_area_mm2
    if finite.size == 0:
        return RegionValues(np.nan, np.nan, np.nan, np.nan, 0, area)
    q25, median, q75 = np.percentile(finite, [25.0, 50.0, 75.0])
    sd = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return RegionValues(float(finite.mean()), float(median), sd, float(q75 - q25), int(finite.size), area)


def region_values(
    map_ms: np.ndarray, mask: np.ndarray, *, pixel_spacing_mm: tuple[float, float], erode_mm: float = 0.0
) -> RegionValues:
    """Mean, median, SD and IQR of a map inside a mask, after an optional erosion of ``erode_mm``.

    Raises
    ------
    ShapeMismatchError
        If map and mask differ in shape.
    AnalysisError
        If ``erode_mm`` is negative or the spacing is not positive.
    """
    values, region = _check(map_ms, mask, erode_mm)
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    return _statistics(values, erode(region.astype(bool), erode_mm, (row_mm, column_mm)), row_mm * column_mm)


def segment_values(
    map_ms: np.ndarray, segment_map: np.ndarray, *, pixel_spacing_mm: tuple[float, float], erode_mm: float = 0.0
) -> dict[int, RegionValues]:
    """:func:`region_values` of every segment (label > 0) of a segment map, keyed by label.

    The erosion applies to the union of the segments (the myocardium), so borders between segments stay.

    Raises
    ------
    ShapeMismatchError
        If map and segment map differ in shape.
    AnalysisError
        If ``erode_mm`` is negative or the spacing is not positive.
    """
    values, segments = _check(map_ms, segment_map, erode_mm)
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    kept = erode(segments > 0, erode_mm, (row_mm, column_mm))
    labels = [int(label) for label in np.unique(segments) if label > 0]
    return {label: _statistics(values, kept & (segments == label), row_mm * column_mm) for label in labels}
