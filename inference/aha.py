"""AHA 17-segment model on short-axis slices (Cerqueira et al., Circulation 105:539-542, 2002).

Angles are *display angles* in degrees around the LV centre: counter-clockwise on the screen from the +x axis with
y pointing up, computed in mm so that non-square pixels do not skew them. In a standard short-axis view anterior is
about 90 deg, the septum about 180 deg, inferior 270 deg and lateral 0 deg. Basal and mid slices are cut into six
60 deg sectors starting at the anterior RV insertion and running counter-clockwise through the septum; apical slices
into four 90 deg sectors centred on the septum (midway between the two insertions). Pixel spacing is (row,
column) in mm; points are (x, y) = (column, row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import ndimage

from inference.contour_fit import FittedContours, check_spacing
from inference.errors import AnalysisError, ShapeMismatchError

LOGGER = logging.getLogger(__name__)

# Without an RV mask: typical insertion angles of a standard short-axis view (inferior wall at the bottom of the
# image), the anterior insertion at 115 deg and the septum spanning 120 deg between the insertions.
DEFAULT_ANTERIOR_INSERTION_DEG = 115.0
DEFAULT_SEPTAL_SPAN_DEG = 120.0
# RV pixels within this distance of the myocardium count as touching it.
RV_CONTACT_MM = 3.0
N_RAYS = 720
#: More than this fraction of rays with the epicardium not outside the endocardium means the contours are not an
#: LV wall (crossed or swapped borders), so no thickness is reported at all.
MAX_INVALID_RAY_FRACTION = 0.5


class AhaLevel(str, Enum):
    """Short-axis level of a slice."""

    BASAL = "basal"
    MID = "mid"
    APICAL = "apical"


LEVEL_SEGMENTS: dict[AhaLevel, tuple[int, ...]] = {
    AhaLevel.BASAL: (1, 2, 3, 4, 5, 6),
    AhaLevel.MID: (7, 8, 9, 10, 11, 12),
    AhaLevel.APICAL: (13, 14, 15, 16),
}


@dataclass(frozen=True)
class WallThickness:
    """Mean wall thickness per AHA segment and over the slice (mm), by radial rays from the LV centre.

    Rays along which the epicardium does not lie outside the endocardium are invalid and left out of every mean;
    a segment without a valid ray has NaN. ``invalid_ray_fraction`` is their share of all rays.
    """

    per_segment_mm: dict[int, float]
    mean_mm: float
    invalid_ray_fraction: float = 0.0


def _level(level: str | AhaLevel) -> AhaLevel:
    try:
        return AhaLevel(level)
    except ValueError:
        raise AnalysisError(f"level must be one of basal, mid, apical, got {level!r}") from None


def display_angle_deg(
    x_px: np.ndarray | float,
    y_px: np.ndarray | float,
    lv_centre_px: tuple[float, float],
    pixel_spacing_mm: tuple[float, float],
) -> np.ndarray:
    """Display angle in [0, 360) of points around the LV centre (a NumPy scalar for one point)."""
    row_mm, column_mm = check_spacing(pixel_spacing_mm)
    cx, cy = lv_centre_px
    dx = (np.asarray(x_px, dtype=np.float64) - cx) * column_mm
    dy = (np.asarray(y_px, dtype=np.float64) - cy) * row_mm
    return np.mod(np.degrees(np.arctan2(-dy, dx)), 360.0)


def segment_of_angle(
    theta_deg: np.ndarray, level: str | AhaLevel, anterior_insertion_deg: float, septal_span_deg: float
) -> np.ndarray:
    """AHA segment number (uint8) at each display angle."""
    level = _level(level)
    theta = np.asarray(theta_deg, dtype=np.float64)
    if level is AhaLevel.APICAL:
        septal_centre = anterior_insertion_deg + septal_span_deg / 2.0
        sector = np.floor(np.mod(theta - (septal_centre - 45.0), 360.0) / 90.0).astype(np.int64)
        # Sectors counter-clockwise from the septum: septal 14, inferior 15, lateral 16, anterior 13.
        return (13 + np.mod(sector + 1, 4)).astype(np.uint8)
    first = 1 if level is AhaLevel.BASAL else 7
    # Sectors counter-clockwise from the anterior insertion: anteroseptal first, anterior last.
    sector = np.floor(np.mod(theta - anterior_insertion_deg, 360.0) / 60.0).astype(np.int64)
    return (first + np.mod(sector + 1, 6)).astype(np.uint8)


def _insertion_geometry(
    lv_centre_px: tuple[float, float],
    anterior_insertion_px: tuple[float, float],
    inferior_insertion_px: tuple[float, float] | None,
    pixel_spacing_mm: tuple[float, float],
) -> tuple[float, float]:
    anterior = float(
        display_angle_deg(anterior_insertion_px[0], anterior_insertion_px[1], lv_centre_px, pixel_spacing_mm)
    )
    if inferior_insertion_px is None:
        return anterior, DEFAULT_SEPTAL_SPAN_DEG
    inferior = float(
        display_angle_deg(inferior_insertion_px[0], inferior_insertion_px[1], lv_centre_px, pixel_spacing_mm)
    )
    return anterior, float(np.mod(inferior - anterior, 360.0))


def aha_segments(
    myocardium_mask: np.ndarray,
    lv_centre_px: tuple[float, float],
    anterior_insertion_px: tuple[float, float],
    level: str | AhaLevel,
    *,
    inferior_insertion_px: tuple[float, float] | None = None,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """AHA segment map: 0 outside the myocardium, the segment number (1-16) inside.

    Parameters
    ----------
    myocardium_mask
        Boolean (rows, columns) mask.
    lv_centre_px, anterior_insertion_px, inferior_insertion_px
        (x, y) pixel points; without the inferior insertion the septum spans DEFAULT_SEPTAL_SPAN_DEG (used only
        by apical slices, whose sectors centre on the septum).
    level
        "basal", "mid" or "apical".
    pixel_spacing_mm
        (row, column) spacing; only its ratio matters.

    Raises
    ------
    AnalysisError
        If the level is unknown or the spacing is not positive.
    """
    mask = np.asarray(myocardium_mask, dtype=bool)
    if mask.ndim != 2:
        raise ShapeMismatchError(f"myocardium_mask must be 2-D, got shape {mask.shape}")
    anterior, span = _insertion_geometry(lv_centre_px, anterior_insertion_px, inferior_insertion_px, pixel_spacing_mm)
    rows, columns = np.nonzero(mask)
    segments = np.zeros(mask.shape, dtype=np.uint8)
    theta = display_angle_deg(columns, rows, lv_centre_px, pixel_spacing_mm)
    segments[rows, columns] = segment_of_angle(theta, level, anterior, span)
    return segments


def _point_at_angle(
    theta_deg: float,
    myocardium_mask: np.ndarray,
    lv_centre_px: tuple[float, float],
    pixel_spacing_mm: tuple[float, float],
) -> tuple[float, float]:
    """The epicardial point at a display angle: the outermost myocardium pixel within 3 deg of the ray."""
    rows, columns = np.nonzero(myocardium_mask)
    theta = display_angle_deg(columns, rows, lv_centre_px, pixel_spacing_mm)
    near = np.abs(np.mod(theta - theta_deg + 180.0, 360.0) - 180.0) <= 3.0
    row_mm, column_mm = pixel_spacing_mm
    cx, cy = lv_centre_px
    radius_mm = np.hypot((columns - cx) * column_mm, (rows - cy) * row_mm)
    outer = float(radius_mm[near].max()) if near.any() else float(radius_mm.max())
    rad = np.radians(theta_deg)
    return (cx + outer * np.cos(rad) / column_mm, cy - outer * np.sin(rad) / row_mm)


def rv_insertion_points(
    myocardium_mask: np.ndarray,
    rv_mask: np.ndarray | None,
    lv_centre_px: tuple[float, float],
    *,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(anterior, inferior) RV insertion points, (x, y) each, on the LV epicardium.

    The RV pixels within RV_CONTACT_MM of the myocardium cover an arc of display angles around the LV centre
    (the complement of the widest angular gap between them); its counter-clockwise start is the anterior
    insertion and its end the inferior one. Without an RV mask, or with one that does not touch the myocardium,
    the insertions lie at DEFAULT_ANTERIOR_INSERTION_DEG and that plus DEFAULT_SEPTAL_SPAN_DEG.

    Raises
    ------
    AnalysisError
        If the myocardium mask is empty or the spacing is not positive.
    """
    spacing = check_spacing(pixel_spacing_mm)
    myocardium = np.asarray(myocardium_mask, dtype=bool)
    if not myocardium.any():
        raise AnalysisError("myocardium_mask is empty, expected the LV wall")
    anterior_deg, inferior_deg = (
        DEFAULT_ANTERIOR_INSERTION_DEG,
        DEFAULT_ANTERIOR_INSERTION_DEG + DEFAULT_SEPTAL_SPAN_DEG,
    )
    if rv_mask is not None:
        rv = np.asarray(rv_mask, dtype=bool)
        if rv.shape != myocardium.shape:
            raise ShapeMismatchError(f"rv_mask {rv.shape} and myocardium_mask {myocardium.shape} differ in shape")
        distance_mm = ndimage.distance_transform_edt(~myocardium, sampling=spacing)
        rows, columns = np.nonzero(rv & ~myocardium & (distance_mm <= RV_CONTACT_MM))
        if len(rows) >= 3:
            theta = np.sort(display_angle_deg(columns, rows, lv_centre_px, spacing))
            gaps = np.diff(np.concatenate([theta, theta[:1] + 360.0]))
            widest = int(np.argmax(gaps))
            # The arc runs from just after the widest gap round to just before it.
            anterior_deg = float(theta[(widest + 1) % len(theta)])
            inferior_deg = float(theta[widest])
        else:
            LOGGER.debug("RV mask does not touch the myocardium; default insertion angles used")
    return (
        _point_at_angle(anterior_deg % 360.0, myocardium, lv_centre_px, spacing),
        _point_at_angle(inferior_deg % 360.0, myocardium, lv_centre_px, spacing),
    )


def _radius_at(points_mm: np.ndarray, centre_mm: np.ndarray, theta_deg: np.ndarray) -> np.ndarray:
    """Radius of a star-shaped closed contour at display angles, interpolated between its points."""
    d = points_mm - centre_mm
    angle = np.mod(np.degrees(np.arctan2(-d[:, 1], d[:, 0])), 360.0)
    radius = np.hypot(d[:, 0], d[:, 1])
    order = np.argsort(angle)
    return np.interp(theta_deg, angle[order], radius[order], period=360.0)


def wall_thickness_mm(
    fitted: FittedContours,
    pixel_spacing_mm: tuple[float, float] | None,
    lv_centre_px: tuple[float, float],
    anterior_insertion_px: tuple[float, float],
    level: str | AhaLevel,
    *,
    inferior_insertion_px: tuple[float, float] | None = None,
    n_rays: int = N_RAYS,
) -> WallThickness:
    """Wall thickness per AHA segment by the radial method.

    ``n_rays`` rays at equal angles leave the LV centre; along each, the thickness is the epicardial minus the
    endocardial radius (both contours taken as star-shaped around the centre). A ray whose epicardial radius is not
    larger than its endocardial one crosses no wall: it is invalid (NaN) and left out, so a thickness is never
    negative. Each segment's value is the mean over its valid rays (NaN without one), and ``mean_mm`` the mean
    over all valid rays. ``pixel_spacing_mm`` None takes the fitted contours'.

    Raises
    ------
    AnalysisError
        If the level is unknown, the spacing is not positive, ``n_rays`` is below 1, or more than
        MAX_INVALID_RAY_FRACTION of the rays are invalid (the contours do not describe a wall around the centre).
    """
    spacing = check_spacing(pixel_spacing_mm if pixel_spacing_mm is not None else fitted.pixel_spacing_mm)
    if n_rays < 1:
        raise AnalysisError(f"n_rays must be at least 1, got {n_rays}")
    scale = np.array([spacing[1], spacing[0]])
    centre_mm = np.asarray(lv_centre_px, dtype=np.float64) * scale
    theta = np.arange(n_rays) * (360.0 / n_rays)
    thickness = _radius_at(np.asarray(fitted.epi_px) * scale, centre_mm, theta) - _radius_at(
        np.asarray(fitted.endo_px) * scale, centre_mm, theta
    )
    valid = np.isfinite(thickness) & (thickness > 0)
    invalid_fraction = 1.0 - float(np.count_nonzero(valid)) / n_rays
    if invalid_fraction > MAX_INVALID_RAY_FRACTION:
        raise AnalysisError(
            f"the epicardium does not lie outside the endocardium along {100.0 * invalid_fraction:.0f} % of the "
            f"rays from the LV centre (at most {100.0 * MAX_INVALID_RAY_FRACTION:.0f} % allowed): no wall thickness"
        )
    if invalid_fraction > 0:
        LOGGER.debug("wall thickness: %.1f %% of the rays cross no wall and are left out", 100.0 * invalid_fraction)
    anterior, span = _insertion_geometry(lv_centre_px, anterior_insertion_px, inferior_insertion_px, spacing)
    segments = segment_of_angle(theta, level, anterior, span)
    per_segment = {}
    for s in LEVEL_SEGMENTS[_level(level)]:
        rays = segments == s
        if rays.any():
            kept = thickness[rays & valid]
            per_segment[int(s)] = float(kept.mean()) if kept.size else float("nan")
    return WallThickness(
        per_segment_mm=per_segment, mean_mm=float(thickness[valid].mean()), invalid_ray_fraction=invalid_fraction
    )
