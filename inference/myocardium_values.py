"""Summary statistics of a map (T1 or T2, ms) inside the myocardium, its mid-wall region or its AHA segments.

Missing values. A pixel has a value when it is finite and positive: the node's maps hold NaN where a fit failed,
and scanners write 0 for failed pixels in their uint16 maps, so 0 and below mean "no value" too. Pixels without a
value are left out of every statistic and counted (``n_missing``); a region with too few valid pixels (fewer than
``min_pixels``, or less than ``min_valid_fraction`` of the region) gets no value at all (NaN statistics and a
``reason``) rather than a mean over a few surviving pixels.

Mid-wall region. The SCMR/EACVI consensus on parametric mapping (Messroghli et al., JCMR 2017;19:75) asks for
myocardial T1 and T2 to be read in a conservative region that keeps away from the endocardial border (partial
volume with blood, T1 about 1.6 times myocardium) and the epicardial border (partial volume with fat and lung).
:func:`mid_wall_mask` keeps the pixels whose normalised depth in the wall, d_endo / (d_endo + d_epi) with both
distances to the borders in mm, lies in the central ``keep_fraction`` of the wall (default 60 %, depth 0.2 to
0.8). A fixed erosion in mm does not do this: below the pixel size it removes nothing (a 1 mm erosion of a map
with 1.4 mm pixels keeps every pixel), above it a thin apical wall loses everything and a thick one keeps far more
than its mid-wall. A relative depth scales with the wall, and the pixels that the centre line crosses are always
kept, so a wall only one or two pixels thick still has a region (then with partial volume: there is no better).

Pixel spacing is (row, column) in mm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.contour_fit import check_spacing
from inference.errors import AnalysisError, ShapeMismatchError
from inference.masks import enclosed, fill_holes, mask_window

LOGGER = logging.getLogger(__name__)

#: A segment needs at least this many pixels with a value to be given one ...
MIN_SEGMENT_PIXELS = 10
#: ... and at least this fraction of its pixels with a value.
MIN_VALID_FRACTION = 0.5
#: Central part of the wall (normalised depth 0.2 to 0.8) in which myocardial values are read.
MID_WALL_FRACTION = 0.6


@dataclass(frozen=True)
class RegionValues:
    """Statistics of a region in the units of the map (ms); NaN when the region has no value.

    ``n_pixels`` counts the pixels with a value (finite and positive), ``n_missing`` those of the region without
    one, ``area_mm2`` the area of the whole region (after any erosion). ``reason`` says in words why the region has
    no value; it is None when it has one.
    """

    mean: float
    median: float
    sd: float  # sample standard deviation (ddof 1)
    iqr: float  # 75th minus 25th percentile
    n_pixels: int
    area_mm2: float
    n_missing: int = 0
    reason: str | None = None

    @property
    def has_value(self) -> bool:
        return bool(np.isfinite(self.mean))

    @property
    def missing_fraction(self) -> float:
        """Fraction of the region's pixels without a value, 0..1 (NaN for an empty region)."""
        total = self.n_pixels + self.n_missing
        return self.n_missing / total if total else float("nan")


def has_value(map_ms: np.ndarray) -> np.ndarray:
    """Where a map holds a value: finite and positive (NaN marks failed fits, 0 a scanner's failed pixel)."""
    values = np.asarray(map_ms, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values > 0)


def _check(map_ms: np.ndarray, mask: np.ndarray, erode_mm: float) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(map_ms, dtype=np.float64)
    region = np.asarray(mask)
    if values.shape != region.shape or values.ndim != 2:
        raise ShapeMismatchError(f"map {values.shape} and mask {region.shape} must be the same 2-D shape")
    if not np.isfinite(erode_mm) or erode_mm < 0:
        raise AnalysisError(f"erode_mm must be a finite number >= 0, got {erode_mm}")
    return values, region


def _check_rule(min_pixels: int, min_valid_fraction: float) -> None:
    if int(min_pixels) != min_pixels or min_pixels < 1:
        raise AnalysisError(f"min_pixels must be a whole number >= 1, got {min_pixels}")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise AnalysisError(f"min_valid_fraction must lie in [0, 1], got {min_valid_fraction}")


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


def _border_distance_mm(outside: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distance from each pixel centre to the nearest edge of an ``outside`` pixel, and that pixel's half extent.

    The Euclidean distance transform measures centre to centre; the border lies half a pixel nearer, half a pixel
    measured along the direction to the nearest outside pixel (0.5 (|u_r| s_r + |u_c| s_c) for a unit direction u).
    """
    distance, (near_rows, near_columns) = ndimage.distance_transform_edt(
        ~outside, sampling=spacing, return_indices=True
    )
    rows, columns = np.indices(outside.shape)
    d_row = np.abs(near_rows - rows) * spacing[0]
    d_column = np.abs(near_columns - columns) * spacing[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(distance > 0, 0.5 * (d_row * spacing[0] + d_column * spacing[1]) / distance, 0.0)
    return np.maximum(distance - half, 0.0), half


def wall_depth(
    myocardium_mask: np.ndarray, cavity_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> np.ndarray:
    """Normalised depth of each myocardium pixel in the wall: 0 at the endocardial border, 1 at the epicardial.

    NaN outside the myocardium. Without a cavity mask (all False) the cavity is the hole of the myocardium.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape or are not 2-D.
    AnalysisError
        If the myocardium encloses no cavity and none is given, or the spacing is not positive.
    """
    depth, _ = _depth_and_centre_line(myocardium_mask, cavity_mask, pixel_spacing_mm)
    return depth


def _depth_and_centre_line(
    myocardium_mask: np.ndarray, cavity_mask: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    spacing = check_spacing(pixel_spacing_mm)
    myocardium = np.asarray(myocardium_mask, dtype=bool)
    cavity = np.asarray(cavity_mask, dtype=bool)
    if myocardium.shape != cavity.shape or myocardium.ndim != 2:
        raise ShapeMismatchError(
            f"myocardium_mask {myocardium.shape} and cavity_mask {cavity.shape} must be the same 2-D shape"
        )
    depth = np.full(myocardium.shape, np.nan)
    centre_line = np.zeros(myocardium.shape, dtype=bool)
    if not myocardium.any():
        return depth, centre_line
    cavity = cavity & ~myocardium
    if not cavity.any():
        cavity = enclosed(myocardium)
    if not cavity.any():
        raise AnalysisError("the myocardium encloses no cavity and no cavity mask was given, expected an LV ring")
    # Work in the bounding box of the heart grown by two pixels (the image edge counts as outside the heart).
    heart = fill_holes(myocardium | cavity)
    rows, columns = np.nonzero(heart)
    top, left = int(rows.min()), int(columns.min())
    box = (slice(top, int(rows.max()) + 1), slice(left, int(columns.max()) + 1))
    pad = 2
    heart_box = np.pad(heart[box], pad)
    cavity_box = np.pad(cavity[box], pad)
    myocardium_box = np.pad(myocardium[box], pad)
    d_endo, half_endo = _border_distance_mm(cavity_box, spacing)
    d_epi, half_epi = _border_distance_mm(~heart_box, spacing)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth_box = d_endo / (d_endo + d_epi)
    # The centre line (equal distance to both borders) passes through the pixel: the difference of the two
    # distances changes by twice the distance moved across the wall, so by up to half_endo + half_epi each way.
    centre_box = np.abs(d_endo - d_epi) <= half_endo + half_epi
    inner = (slice(pad, -pad), slice(pad, -pad))
    depth[box] = np.where(myocardium_box, depth_box, np.nan)[inner]
    centre_line[box] = (myocardium_box & centre_box)[inner]
    return depth, centre_line


def mid_wall_mask(
    myocardium_mask: np.ndarray,
    cavity_mask: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    keep_fraction: float = MID_WALL_FRACTION,
) -> np.ndarray:
    """The conservative mid-wall region: myocardium pixels in the central ``keep_fraction`` of the wall.

    A pixel is kept when its normalised depth (:func:`wall_depth`) lies within ``(1 - keep_fraction) / 2`` of
    0.5 from either side, i.e. 0.2 to 0.8 by default, or when the wall's centre line passes through it, so that
    thin walls keep at least their centre line. See the module docstring for why.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape or are not 2-D.
    AnalysisError
        If ``keep_fraction`` is not in (0, 1], the myocardium encloses no cavity and none is given, or the spacing
        is not positive.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise AnalysisError(f"keep_fraction must lie in (0, 1], got {keep_fraction}")
    depth, centre_line = _depth_and_centre_line(myocardium_mask, cavity_mask, pixel_spacing_mm)
    low, high = (1.0 - keep_fraction) / 2.0, (1.0 + keep_fraction) / 2.0
    with np.errstate(invalid="ignore"):
        return ((depth >= low) & (depth <= high)) | centre_line


def _statistics(
    values: np.ndarray, region: np.ndarray, pixel_area_mm2: float, min_pixels: int, min_valid_fraction: float
) -> RegionValues:
    inside = values[region]
    valid = inside[has_value(inside)]
    n_valid, n_region = int(valid.size), int(inside.size)
    n_missing = n_region - n_valid
    area = float(n_region) * pixel_area_mm2
    reason = None
    if n_region == 0:
        reason = "the region holds no pixel"
    elif n_valid < min_pixels:
        reason = f"{n_valid} valid pixel{'' if n_valid == 1 else 's'}, at least {min_pixels} needed"
    elif n_valid < min_valid_fraction * n_region:
        reason = (
            f"only {n_valid} of {n_region} pixels ({100.0 * n_valid / n_region:.0f} %) have a value, "
            f"at least {100.0 * min_valid_fraction:.0f} % needed"
        )
    if reason is not None:
        return RegionValues(np.nan, np.nan, np.nan, np.nan, n_valid, area, n_missing, reason)
    q25, median, q75 = np.percentile(valid, [25.0, 50.0, 75.0])
    sd = float(np.std(valid, ddof=1)) if n_valid > 1 else 0.0
    return RegionValues(float(valid.mean()), float(median), sd, float(q75 - q25), n_valid, area, n_missing)


def region_values(
    map_ms: np.ndarray,
    mask: np.ndarray,
    *,
    pixel_spacing_mm: tuple[float, float],
    erode_mm: float = 0.0,
    min_pixels: int = 1,
    min_valid_fraction: float = 0.0,
) -> RegionValues:
    """Mean, median, SD and IQR of a map over the pixels of a mask that have a value.

    ``erode_mm`` drops a border zone first; ``min_pixels`` and ``min_valid_fraction`` say how many pixels with a
    value the region needs to be given one (by default one pixel; :func:`segment_values` is stricter).

    Raises
    ------
    ShapeMismatchError
        If map and mask differ in shape.
    AnalysisError
        If ``erode_mm`` is negative, the spacing is not positive or the rule is out of range.
    """
    values, region = _check(map_ms, mask, erode_mm)
    _check_rule(min_pixels, min_valid_fraction)
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    return _statistics(
        values, erode(region.astype(bool), erode_mm, (row_mm, column_mm)), row_mm * column_mm, int(min_pixels),
        min_valid_fraction,
    )


def segment_values(
    map_ms: np.ndarray,
    segment_map: np.ndarray,
    *,
    pixel_spacing_mm: tuple[float, float],
    erode_mm: float = 0.0,
    within: np.ndarray | None = None,
    min_pixels: int = MIN_SEGMENT_PIXELS,
    min_valid_fraction: float = MIN_VALID_FRACTION,
) -> dict[int, RegionValues]:
    """:func:`region_values` of every segment (label > 0) of a segment map, keyed by label.

    The erosion applies to the union of the segments (the myocardium), so borders between segments stay.
    ``within`` (e.g. :func:`mid_wall_mask`) restricts every segment to its pixels; every label of the segment
    map is still reported. A segment with fewer than ``min_pixels`` pixels with a value, or with a value in less
    than ``min_valid_fraction`` of its pixels, gets NaN statistics and a ``reason``.

    Raises
    ------
    ShapeMismatchError
        If map, segment map and ``within`` differ in shape.
    AnalysisError
        If ``erode_mm`` is negative, the spacing is not positive or the rule is out of range.
    """
    values, segments = _check(map_ms, segment_map, erode_mm)
    _check_rule(min_pixels, min_valid_fraction)
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    region = None if within is None else np.asarray(within, dtype=bool)
    if region is not None and region.shape != segments.shape:
        raise ShapeMismatchError(f"within {region.shape} and segment map {segments.shape} differ in shape")
    # Every segment lies in the segments' box: measured there rather than over the whole matrix (erosion counts
    # what lies beyond the box as outside, as it does the image edge).
    window = mask_window(segments > 0)
    if window is None:
        return {}
    values, segments = values[window], segments[window]
    kept = erode(segments > 0, erode_mm, (row_mm, column_mm))
    if region is not None:
        kept = kept & region[window]
    labels = [int(label) for label in np.unique(segments) if label > 0]
    return {
        label: _statistics(values, kept & (segments == label), row_mm * column_mm, int(min_pixels), min_valid_fraction)
        for label in labels
    }
