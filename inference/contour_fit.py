"""Smooth closed endo- and epicardial contours from segmentation masks.

The steps follow the contour post-processing of published T1/T2 mapping segmentation pipelines: border extraction
(marching squares at 0.5), dominant points after Teh and Chin, "On the detection of dominant points on digital
curves", IEEE Trans PAMI 11(8):859-872, 1989, filtering of crowded points, convex-hull correction of a C-shaped
endocardial border when the myocardium is open, and a periodic B-spline resampled to a fixed number of points.

Coordinates: pixel (x, y) is (column, row) with the centre of the top-left pixel at (0, 0). Pixel spacing is
(row spacing, column spacing) in mm as DICOM PixelSpacing gives it, so x scales with the second value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import splev, splprep
from scipy.spatial import ConvexHull
from skimage.draw import polygon2mask
from skimage.measure import find_contours
from skimage.morphology import disk

from inference.errors import AnalysisError, ShapeMismatchError
from inference.masks import enclosed, fill_holes, mask_window

LOGGER = logging.getLogger(__name__)

# Bounding boxes of ventricles in short axis are roughly round; a component longer than 3:1 is a vessel or an
# artefact, not the LV.
MAX_ASPECT_RATIO = 3.0
# Dominant points closer together than this (pixels) add no shape information and make the spline wiggle.
MIN_POINT_SEPARATION_PX = 1.0
# Longest stretch of border (pixels) left without a support point.
MAX_GAP_PX = 3.0
# Smoothing of the spline: mean squared distance (pixels^2) allowed between support points and spline; takes out
# the half-pixel staircase of the marching-squares border without flattening real curvature.
SMOOTHING_PX2 = 0.05
MIN_SUPPORT_POINTS = 8
# Widest gap in an open myocardial ring (twice this radius) that is bridged when no cavity mask is given.
MAX_CLOSING_RADIUS_PX = 10
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class ContourFitError(AnalysisError):
    """A mask holds no usable region, or a contour has too few points to fit."""


@dataclass(frozen=True)
class FittedContours:
    """Closed endo- and epicardial contours, (N, 2) float (x, y) pixels, counter-clockwise on the screen.

    The last point is not repeated. ``pixel_spacing_mm`` is (row, column) spacing.
    """

    endo_px: np.ndarray
    epi_px: np.ndarray
    pixel_spacing_mm: tuple[float, float]

    @property
    def endo_mm(self) -> np.ndarray:
        """Endocardial contour in mm, (x, y) from the centre of the top-left pixel."""
        return to_mm(self.endo_px, self.pixel_spacing_mm)

    @property
    def epi_mm(self) -> np.ndarray:
        """Epicardial contour in mm, (x, y) from the centre of the top-left pixel."""
        return to_mm(self.epi_px, self.pixel_spacing_mm)


def to_mm(points_px: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """(x, y) pixel points in mm, given (row, column) spacing."""
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    points = np.asarray(points_px, dtype=np.float64)
    return points * np.array([column_mm, row_mm])


def check_spacing(pixel_spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """Validate a (row, column) pixel spacing.

    Raises
    ------
    AnalysisError
        If it is not two positive finite numbers.
    """
    values = np.asarray(pixel_spacing_mm, dtype=np.float64)
    if values.shape != (2,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise AnalysisError(f"pixel_spacing_mm must be two positive numbers, got {pixel_spacing_mm}")
    return float(values[0]), float(values[1])


#: Regions of support are sought up to this k first; the few points still growing there are sought to the end.
_FIRST_REACH = 16


def _region_of_support(points: np.ndarray, max_k: int) -> np.ndarray:
    """Teh-Chin region of support k_i of every point of a closed curve.

    k grows from 1 while the chord |p(i-k) p(i+k)| keeps growing and the ratio of the distance of p(i) from the
    chord to the chord length keeps growing in magnitude (condition (a) and (b) of Teh and Chin).
    """
    n = len(points)
    k = _first_stop(points, np.arange(n), min(max_k, _FIRST_REACH))
    growing = np.flatnonzero(k > _FIRST_REACH)  # no condition held within the first reach
    if growing.size and max_k > _FIRST_REACH:
        k[growing] = _first_stop(points, growing, max_k)
    return np.minimum(k, max_k)  # where nothing stops it, k ends at max_k


def _first_stop(points: np.ndarray, indices: np.ndarray, max_k: int) -> np.ndarray:
    """The first k in 1..max_k at which condition (a) or (b) holds for the points ``indices``; max_k + 1 for
    those where neither holds up to max_k."""
    n = len(points)
    ks = np.arange(1, max_k + 2)
    index = indices[:, None]
    ahead = points[(index + ks[None, :]) % n]  # (m, K, 2)
    behind = points[(index - ks[None, :]) % n]
    chord = ahead - behind
    chord_length = np.hypot(chord[..., 0], chord[..., 1])
    rel = points[indices][:, None, :] - behind
    # Signed distance of p(i) from the chord p(i-k) -> p(i+k).
    signed = (chord[..., 0] * rel[..., 1] - chord[..., 1] * rel[..., 0]) / np.maximum(chord_length, 1e-12)
    ratio = signed / np.maximum(chord_length, 1e-12)
    stop_a = chord_length[:, :-1] >= chord_length[:, 1:]
    positive = signed[:, :-1] > 0
    stop_b = np.where(positive, ratio[:, :-1] >= ratio[:, 1:], ratio[:, :-1] <= ratio[:, 1:])
    # A straight run (distance 0) keeps growing through condition (a) only.
    stop_b &= signed[:, :-1] != 0
    stop = stop_a | stop_b
    stopped = stop.any(axis=1)
    return np.where(stopped, np.argmax(stop, axis=1) + 1, max_k + 1)


def _k_cosine(points: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Cosine of the angle at p(i) between p(i+k_i) and p(i-k_i): -1 on a straight run, towards 1 at a corner."""
    n = len(points)
    index = np.arange(n)
    a = points[(index + k) % n] - points
    b = points[(index - k) % n] - points
    norms = np.maximum(np.hypot(a[:, 0], a[:, 1]) * np.hypot(b[:, 0], b[:, 1]), 1e-12)
    return (a * b).sum(axis=1) / norms


def dominant_points(contour_px: np.ndarray) -> np.ndarray:
    """Indices of the dominant points of a closed contour (Teh and Chin 1989, k-cosine measure).

    Parameters
    ----------
    contour_px
        (N, 2) points of a closed curve, the last point not repeating the first.

    Returns
    -------
    numpy.ndarray
        Increasing indices into ``contour_px``.

    Raises
    ------
    ContourFitError
        If the contour has fewer than 5 points.
    """
    points = np.asarray(contour_px, dtype=np.float64)
    n = len(points)
    if points.ndim != 2 or points.shape[1] != 2 or n < 5:
        raise ContourFitError(f"contour_px must be (N >= 5, 2) points, got shape {points.shape}")
    k = _region_of_support(points, max(1, n // 2 - 1))
    significance = _k_cosine(points, k)
    index = np.arange(n)
    # Non-maximum suppression: p(i) survives when no point within half its region of support is more significant.
    reach = k // 2
    keep = np.ones(n, dtype=bool)
    for offset in range(1, int(reach.max()) + 1):
        within = reach >= offset
        for neighbour in (index + offset) % n, (index - offset) % n:
            keep &= ~(within & (significance[neighbour] > significance))
    # Points with k = 1 sit on single-pixel noise; keep one only when it beats both immediate neighbours.
    lone = keep & (k == 1)
    beaten = (significance[(index + 1) % n] >= significance) | (significance[(index - 1) % n] >= significance)
    keep &= ~(lone & beaten)
    # Of runs of adjacent survivors with equal significance (plateaus), keep the first.
    plateau = keep & keep[(index - 1) % n] & np.isclose(significance, significance[(index - 1) % n])
    if not np.all(plateau[keep]):
        keep &= ~plateau
    return np.flatnonzero(keep)


def select_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component whose bounding box width:height lies within 1:3 and 3:1.

    Raises
    ------
    ContourFitError
        If no component qualifies (empty mask, or only elongated components).
    """
    region = np.asarray(mask, dtype=bool)
    window = mask_window(region, margin=0)  # labelled in the mask's box: the same components
    if window is None:
        raise ContourFitError("mask is empty, expected at least one foreground pixel")
    labels, count = ndimage.label(region[window], structure=_EIGHT_CONNECTED)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    best, best_size = 0, 0.0
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        height = box[0].stop - box[0].start
        width = box[1].stop - box[1].start
        if max(width, height) <= MAX_ASPECT_RATIO * min(width, height) and sizes[label - 1] > best_size:
            best, best_size = label, float(sizes[label - 1])
    if best == 0:
        raise ContourFitError(f"none of {count} components has a bounding box within 1:{MAX_ASPECT_RATIO:g}")
    chosen = np.zeros(region.shape, dtype=bool)
    chosen[window] = labels == best
    return chosen


def contour_mask(contour_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise a closed (x, y) polygon: a pixel belongs to it when its centre lies inside.

    The same convention as the phantom's truth masks and reader masks.
    """
    points = np.asarray(contour_px, dtype=np.float64)
    return polygon2mask((int(shape[0]), int(shape[1])), points[:, ::-1])


def border_contour(mask: np.ndarray) -> np.ndarray:
    """The longest closed border of a mask at level 0.5, (x, y) points, counter-clockwise on the screen."""
    region = np.asarray(mask, dtype=bool)
    window = mask_window(region)  # traced in the mask's box: the same borders, moved by whole pixels
    if window is None:
        raise ContourFitError("mask is empty, expected a region to outline")
    contours = find_contours(np.pad(region[window].astype(np.float64), 1), 0.5)
    longest = max(contours, key=len)[:-1]  # closed: the last point repeats the first
    points = longest[:, ::-1] - 1.0 + np.array([window[1].start, window[0].start], dtype=np.float64)
    return _counter_clockwise(points)


def _signed_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _counter_clockwise(points: np.ndarray) -> np.ndarray:
    # With y pointing down the image, counter-clockwise on the screen has a negative shoelace area.
    return points if _signed_area(points) < 0 else points[::-1].copy()


def _fill_gaps(contour: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Dominant points plus border points wherever two dominant points lie more than MAX_GAP_PX apart along it.

    Teh-Chin finds no dominant point along a digital straight run (a 45 deg staircase of a round border), and a
    spline through the ends of a long run cuts the arc; the extra points keep the spline on the border.
    """
    n = len(contour)
    steps = np.hypot(*(np.roll(contour, -1, axis=0) - contour).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])  # arc[i]: length from point 0 to point i; arc[n]: perimeter
    chosen = []
    for position, start in enumerate(indices):
        stop = indices[position + 1] if position + 1 < len(indices) else indices[0] + n
        length = arc[stop] - arc[start] if stop <= n else arc[n] - arc[start] + arc[stop - n]
        pieces = max(1, int(np.ceil(length / MAX_GAP_PX)))
        chosen.extend((start + np.round(np.arange(pieces) * (stop - start) / pieces).astype(np.int64)) % n)
    return contour[np.asarray(chosen)]


def _drop_crowded(points: np.ndarray) -> np.ndarray:
    """Drop points closer than MIN_POINT_SEPARATION_PX to the last kept one."""
    kept = [points[0]]
    for point in points[1:]:
        if np.hypot(*(point - kept[-1])) >= MIN_POINT_SEPARATION_PX:
            kept.append(point)
    if len(kept) > 3 and np.hypot(*(kept[-1] - kept[0])) < MIN_POINT_SEPARATION_PX:
        kept.pop()
    return np.asarray(kept)


def _hull_in_order(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of the points, counter-clockwise on the screen."""
    hull = ConvexHull(points)
    return _counter_clockwise(points[hull.vertices])


def _spline(points: np.ndarray, n_points: int) -> np.ndarray:
    """Periodic cubic smoothing B-spline through the points, sampled at ``n_points`` equal parameter steps."""
    closed = np.vstack([points, points[:1]])
    tck, _ = splprep([closed[:, 0], closed[:, 1]], s=SMOOTHING_PX2 * len(closed), per=True, k=3)
    u = np.arange(n_points) / n_points
    x, y = splev(u, tck)
    return _counter_clockwise(np.stack([x, y], axis=1))


def _smooth_border(mask: np.ndarray, n_points: int, *, convex: bool) -> np.ndarray:
    contour = border_contour(mask)
    if len(contour) < MIN_SUPPORT_POINTS:
        raise ContourFitError(f"border has {len(contour)} points, expected at least {MIN_SUPPORT_POINTS}")
    support = _fill_gaps(contour, dominant_points(contour))
    if convex:
        # Bridge the gap of a C-shaped border: keep the hull, then put points back along its long edges.
        support = _densify(_hull_in_order(support), MAX_GAP_PX)
    support = _drop_crowded(support)
    if len(support) < 4:
        raise ContourFitError(f"only {len(support)} support points remain, expected at least 4")
    return _spline(support, n_points)


def _densify(polygon: np.ndarray, step_px: float) -> np.ndarray:
    """Points along a closed polygon at most ``step_px`` apart, vertices included."""
    following = np.roll(polygon, -1, axis=0)
    counts = np.maximum(1, np.ceil(np.hypot(*(following - polygon).T) / step_px).astype(np.int64))
    parts = [
        polygon[i] + (np.arange(count) / count)[:, None] * (following[i] - polygon[i]) for i, count in enumerate(counts)
    ]
    return np.concatenate(parts)


def is_closed_ring(myocardium_mask: np.ndarray) -> bool:
    """Whether the myocardium encloses a cavity (False for a C-shape with a gap)."""
    mask = np.asarray(myocardium_mask, dtype=bool)
    return bool(np.any(enclosed(mask)))


def fit_contours(
    cavity_mask: np.ndarray,
    myocardium_mask: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    *,
    n_points: int = 128,
) -> FittedContours:
    """Smooth closed endo- and epicardial contours from a cavity and a myocardium mask.

    The endocardium outlines the cavity (or, when the cavity mask is empty, the hole of the myocardium); the
    epicardium outlines myocardium and cavity together. When the myocardium does not close around the cavity
    the endocardial support points are replaced by their convex hull, bridging the gap.

    Parameters
    ----------
    cavity_mask, myocardium_mask
        Boolean (rows, columns) masks.
    pixel_spacing_mm
        (row, column) spacing in mm.
    n_points
        Points per output contour.

    Raises
    ------
    ShapeMismatchError
        If the masks differ in shape.
    ContourFitError
        If no usable myocardium or cavity is found, or ``n_points`` is below 8.
    """
    spacing = check_spacing(pixel_spacing_mm)
    cavity = np.asarray(cavity_mask, dtype=bool)
    myocardium = np.asarray(myocardium_mask, dtype=bool)
    if cavity.shape != myocardium.shape or cavity.ndim != 2:
        raise ShapeMismatchError(
            f"cavity_mask {cavity.shape} and myocardium_mask {myocardium.shape} must be the same 2-D shape"
        )
    if n_points < 8:
        raise ContourFitError(f"n_points must be at least 8, got {n_points}")
    heart = select_component(myocardium | cavity)
    # Work in the heart's bounding box, grown enough for the closing of an open ring; shift the contours back.
    rows, columns = np.nonzero(heart)
    margin = MAX_CLOSING_RADIUS_PX + 2
    top, left = max(0, int(rows.min()) - margin), max(0, int(columns.min()) - margin)
    box = (slice(top, int(rows.max()) + margin + 1), slice(left, int(columns.max()) + margin + 1))
    heart, cavity, myocardium = heart[box], cavity[box], myocardium[box] & heart[box]
    offset = np.array([left, top], dtype=np.float64)
    closed = is_closed_ring(myocardium)
    if cavity.any():
        cavity_region = select_component(cavity & heart)
    elif closed:
        cavity_region = select_component(enclosed(myocardium))
    else:
        cavity_region = select_component(_close_ring(myocardium))
    endo = _smooth_border(cavity_region, n_points, convex=not closed)
    epi = _smooth_border(fill_holes(heart), n_points, convex=False)
    LOGGER.debug(
        "fitted contours: ring %s, %d endo and %d epi points", "closed" if closed else "open", len(endo), len(epi)
    )
    return FittedContours(endo_px=endo + offset, epi_px=epi + offset, pixel_spacing_mm=spacing)


def _close_ring(myocardium: np.ndarray) -> np.ndarray:
    """The cavity of an open ring: the hole left after the smallest disk closing that bridges the gap."""
    for radius in range(1, MAX_CLOSING_RADIUS_PX + 1):
        closed = ndimage.binary_closing(np.pad(myocardium, radius), structure=disk(radius))[
            radius:-radius, radius:-radius
        ]
        cavity = enclosed(closed)
        if cavity.any():
            return cavity
    raise ContourFitError(f"the myocardium stays open after a closing of {MAX_CLOSING_RADIUS_PX} px, expected a ring")
