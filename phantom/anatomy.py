"""Short-axis anatomy of one slice: label map, contours, AHA segments and partial-volume property maps.

Coordinates: pixel (x, y) is (column, row) with the centre of the top-left pixel at (0, 0), as in
:mod:`phantom.model`. In-plane millimetres are ``u`` along the row direction (to the right of the image, the
patient's left) and ``v`` along the column direction (down the image, towards the diaphragm), both relative to the
LV centre. Angles are *display angles* in degrees: counter-clockwise on the screen from the +x axis with y pointing
up, ``theta = atan2(-v, u)``; anterior is 90 deg, the septum about 180 deg, inferior 270 deg, lateral 0 deg.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from phantom.model import FieldStrength, HeartGeometry, SliceAnatomy, SliceGeometry, SliceLevel, Tissue
from phantom.tissue import (
    Pathology,
    PathologyKind,
    TissueProperties,
    apply_iron_to_organs,
    level_segments,
    sample_tissue_properties,
)

LOGGER = logging.getLogger(__name__)

SUPERSAMPLING = 4  # sub-pixels per pixel side for the partial-volume property maps
N_CONTOUR_POINTS = 360
MATRICES: tuple[tuple[int, int], ...] = ((256, 218), (192, 144), (288, 384), (218, 256))  # (rows, columns)
PIXEL_SPACING_RANGE_MM = (1.2, 2.0)
_FOV_RANGE_MM = (250.0, 480.0)  # smallest and largest field of view side accepted when choosing a spacing
ANGLE_GRID_DEG = np.arange(2048) * (360.0 / 2048)
LEVELS = (SliceLevel.BASAL, SliceLevel.MID, SliceLevel.APICAL)
# Size of each level relative to the basal slice: endocardial radius, wall thickness, RV depth.
_LEVEL_SCALE = {
    SliceLevel.BASAL: (1.0, 1.0, 1.0),
    SliceLevel.MID: (0.9, 0.97, 0.75),
    SliceLevel.APICAL: (0.62, 0.78, 0.3),
}
WALL_THICKNESS_LIMITS_MM = (6.0, 15.0)


class AnatomyError(ValueError):
    """A requested slice geometry cannot hold the anatomy (matrix, spacing or orientation out of range)."""


def make_heart_geometry(rng: np.random.Generator) -> HeartGeometry:
    """Draw the short-axis geometry of one study: orientation, long axis, slice positions and heart size.

    The long axis points from base to apex towards the patient's left, anterior and inferior (LPS: +x, -y, -z);
    the column direction is the projection of the posterior-inferior direction onto the short-axis plane, so the
    inferior wall lies towards the bottom of the image, and the row direction completes the plane towards the
    patient's left.
    """
    long_axis = _unit(np.array([0.55, -0.45, -0.65]) + rng.normal(0.0, 0.07, 3))
    towards_diaphragm = _unit(np.array([0.0, 0.45, -0.9]) + rng.normal(0.0, 0.05, 3))
    column = _unit(towards_diaphragm - np.dot(towards_diaphragm, long_axis) * long_axis)
    row = _unit(np.cross(column, long_axis))
    if row[0] < 0:
        row = -row
    spacing_mm = float(rng.uniform(16.0, 24.0))
    basal_offset_mm = float(rng.uniform(-3.0, 3.0))
    return HeartGeometry(
        row_direction=_as_tuple(row),
        column_direction=_as_tuple(column),
        long_axis_direction=_as_tuple(long_axis),
        base_centre_mm=_as_tuple(np.array([25.0, 5.0, -20.0]) + rng.normal(0.0, 12.0, 3)),
        level_offsets_mm=(basal_offset_mm, basal_offset_mm + spacing_mm, basal_offset_mm + 2 * spacing_mm),
        slice_thickness_mm=float(rng.choice([6.0, 8.0])),
        basal_endo_radius_mm=float(rng.uniform(22.5, 27.5)),
        basal_wall_thickness_mm=float(rng.uniform(8.0, 11.0)),
        rv_depth_mm=float(rng.uniform(16.0, 26.0)),
        anterior_insertion_deg=float(rng.uniform(105.0, 125.0)),
        septal_span_deg=float(rng.uniform(110.0, 135.0)),
        shape_seed=int(rng.integers(0, 2**31 - 1)),
    )


def choose_matrix(rng: np.random.Generator) -> tuple[tuple[int, int], float]:
    """Draw an acquisition matrix (rows, columns) and a square pixel spacing in mm that gives a usable FOV."""
    rows, columns = MATRICES[int(rng.integers(len(MATRICES)))]
    low = max(PIXEL_SPACING_RANGE_MM[0], _FOV_RANGE_MM[0] / min(rows, columns))
    high = min(PIXEL_SPACING_RANGE_MM[1], _FOV_RANGE_MM[1] / max(rows, columns))
    return (rows, columns), round(float(rng.uniform(low, high)), 4)


def segment_of_angle(
    theta_deg: np.ndarray, level: SliceLevel, anterior_insertion_deg: float, septal_span_deg: float
) -> np.ndarray:
    """AHA segment number at each display angle (Cerqueira et al. 2002).

    Basal and mid slices are cut into six 60 deg sectors starting at the anterior RV insertion and running
    counter-clockwise on the screen through the septum: anteroseptal (2/8), inferoseptal (3/9), inferior (4/10),
    inferolateral (5/11), anterolateral (6/12), anterior (1/7). The apical slice has four 90 deg sectors
    centred on the septum (midway between the insertions): septal 14, inferior 15, lateral 16, anterior 13.

    Kept apart from :func:`inference.aha.segment_of_angle` on purpose: the phantom is the ground truth the node's
    AHA code is tested against, and tests/unit/inference/test_aha.py checks that the two agree.
    """
    theta = np.asarray(theta_deg, dtype=np.float64)
    level = SliceLevel(level)
    if level is SliceLevel.APICAL:
        septal_centre = anterior_insertion_deg + septal_span_deg / 2.0
        sector = np.floor(np.mod(theta - (septal_centre - 45.0), 360.0) / 90.0).astype(np.int64)
        return (13 + np.mod(sector + 1, 4)).astype(np.uint8)
    first = 1 if level is SliceLevel.BASAL else 7
    sector = np.floor(np.mod(theta - anterior_insertion_deg, 360.0) / 60.0).astype(np.int64)
    return (first + np.mod(sector + 1, 6)).astype(np.uint8)


def insertion_angles_deg(anatomy: SliceAnatomy) -> tuple[float, float]:
    """(anterior insertion display angle, septal span) of a slice, from its RV insertion points."""
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    (ax, ay), (ix, iy) = anatomy.rv_insertion_px
    anterior = float(np.degrees(np.arctan2(-(ay - cy) * row_spacing, (ax - cx) * column_spacing)) % 360.0)
    inferior = float(np.degrees(np.arctan2(-(iy - cy) * row_spacing, (ix - cx) * column_spacing)) % 360.0)
    return anterior, float((inferior - anterior) % 360.0)


def contour_segments(anatomy: SliceAnatomy, points_px: np.ndarray) -> np.ndarray:
    """AHA segment of each (x, y) point, by its display angle around the LV centre."""
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    points = np.asarray(points_px, dtype=np.float64)
    theta = np.degrees(np.arctan2(-(points[:, 1] - cy) * row_spacing, (points[:, 0] - cx) * column_spacing))
    return segment_of_angle(theta, anatomy.geometry.level, *insertion_angles_deg(anatomy))


@dataclass(frozen=True)
class Shape:
    """Everything that decides the labels of a slice, in mm around the LV centre."""

    endo_mm: np.ndarray  # radius on ANGLE_GRID_DEG, trabeculation included
    epi_mm: np.ndarray
    rv_depth_mm: np.ndarray  # 0 outside the RV span
    rv_wall_mm: np.ndarray
    fat_mm: np.ndarray  # epicardial fat thickness outside the heart
    papillary: tuple[tuple[float, float, float, float, float], ...]  # (u, v, semi-axis a, b, angle rad)
    body: tuple[float, float, float, float, float]  # centre u, v, semi-axes a, b, chest wall thickness
    diaphragm: tuple[float, float, float] | None  # dome top v, curvature 1/mm, split u (liver left of it)
    has_spleen: bool
    anterior_insertion_deg: float
    septal_span_deg: float

    @staticmethod
    def at(values: np.ndarray, theta_deg: np.ndarray) -> np.ndarray:
        return np.interp(theta_deg, ANGLE_GRID_DEG, values, period=360.0)


def make_slice_anatomy(
    rng: np.random.Generator,
    level: SliceLevel,
    field: FieldStrength,
    *,
    matrix: tuple[int, int] | None = None,
    pixel_spacing_mm: float | None = None,
    pathology: Pathology | None = None,
    geometry: HeartGeometry | None = None,
    slice_centre_mm: tuple[float, float, float] | None = None,
    orientation: tuple[float, float, float, float, float, float] | None = None,
    properties: dict[Tissue, TissueProperties] | None = None,
) -> SliceAnatomy:
    """Build the ground truth of one short-axis slice.

    Parameters
    ----------
    rng
        Random generator of this slice.
    level
        Basal, mid or apical.
    field
        Field strength (chooses the tissue values when ``properties`` is not given).
    matrix, pixel_spacing_mm
        (rows, columns) and square pixel spacing; drawn from :data:`MATRICES` when not given.
    pathology
        Change of myocardial T1/T2 in some segments of this level, or None.
    geometry
        Shared geometry of the study (:func:`make_heart_geometry`); drawn when not given.
    slice_centre_mm, orientation
        Override the LV centre (LPS, mm) and ImageOrientationPatient that ``geometry`` gives.
    properties
        Tissue properties of the study (:func:`phantom.tissue.sample_tissue_properties`); drawn when not given.

    Raises
    ------
    AnatomyError
        If the matrix, spacing or orientation are out of range, or the pathology names segments of another level.
    """
    level = SliceLevel(level)
    geometry = geometry if geometry is not None else make_heart_geometry(rng)
    if matrix is None or pixel_spacing_mm is None:
        drawn_matrix, drawn_spacing = choose_matrix(rng)
        matrix = matrix if matrix is not None else drawn_matrix
        pixel_spacing_mm = pixel_spacing_mm if pixel_spacing_mm is not None else drawn_spacing
    rows, columns = (int(matrix[0]), int(matrix[1]))
    if not (64 <= rows <= 1024 and 64 <= columns <= 1024):
        raise AnatomyError(f"matrix must have 64-1024 rows and columns, got {matrix}")
    spacing = float(pixel_spacing_mm)
    if not 0.5 <= spacing <= 4.0:
        raise AnatomyError(f"pixel_spacing_mm must be in [0.5, 4.0], got {pixel_spacing_mm}")
    if pathology is not None and not set(pathology.segments) <= set(level_segments(level)):
        raise AnatomyError(f"pathology segments {pathology.segments} are not all in the {level.value} slice")
    row_dir, col_dir = slice_orientation(geometry, orientation)
    centre_mm = np.asarray(slice_centre_mm if slice_centre_mm is not None else geometry.slice_centre_mm(level))
    properties = properties if properties is not None else sample_tissue_properties(rng, field)
    properties = apply_iron_to_organs(properties, pathology)

    shape = _draw_shape(rng, level, geometry)
    # LV centre near the image centre, as the operator places the FOV.
    x_lv = (columns - 1) / 2.0 + float(rng.uniform(-0.04, 0.04)) * columns
    y_lv = (rows - 1) / 2.0 + float(rng.uniform(-0.04, 0.04)) * rows

    # Labels at pixel centres: the truth masks, consistent with polygon rasterisation of the contours.
    u_px = (np.arange(columns) - x_lv) * spacing
    v_px = (np.arange(rows) - y_lv) * spacing
    label_map, _, _ = _label_points(shape, u_px[np.newaxis, :], v_px[:, np.newaxis])
    t1_map, t2_map, pd_map = _property_maps(shape, properties, pathology, level, label_map, x_lv, y_lv, spacing)

    theta_contour = np.arange(N_CONTOUR_POINTS) * (360.0 / N_CONTOUR_POINTS)
    endo = polar_to_px(shape.at(shape.endo_mm, theta_contour), theta_contour, x_lv, y_lv, spacing)
    epi = polar_to_px(shape.at(shape.epi_mm, theta_contour), theta_contour, x_lv, y_lv, spacing)
    inferior_deg = shape.anterior_insertion_deg + shape.septal_span_deg
    insertion_angles = np.array([shape.anterior_insertion_deg, inferior_deg])
    insertions = polar_to_px(shape.at(shape.epi_mm, insertion_angles), insertion_angles, x_lv, y_lv, spacing)

    yy, xx = np.mgrid[0:rows, 0:columns]
    theta_px = np.degrees(np.arctan2(-(yy - y_lv), xx - x_lv))
    segments = segment_of_angle(theta_px, level, shape.anterior_insertion_deg, shape.septal_span_deg)
    aha_map = np.where(label_map == Tissue.MYOCARDIUM, segments, 0).astype(np.uint8)

    thickness_grid = shape.epi_mm - shape.endo_mm
    grid_segments = segment_of_angle(ANGLE_GRID_DEG, level, shape.anterior_insertion_deg, shape.septal_span_deg)
    wall_thickness = {int(s): float(thickness_grid[grid_segments == s].mean()) for s in level_segments(level)}

    position = centre_mm - x_lv * spacing * row_dir - y_lv * spacing * col_dir
    normal = np.cross(row_dir, col_dir)
    slice_geometry = SliceGeometry(
        rows=rows,
        columns=columns,
        pixel_spacing_mm=(spacing, spacing),
        slice_thickness_mm=geometry.slice_thickness_mm,
        image_orientation_patient=_as_tuple(row_dir) + _as_tuple(col_dir),
        image_position_patient_mm=_as_tuple(position),
        slice_location_mm=round(float(np.dot(centre_mm, normal)), 4),
        level=level,
    )
    LOGGER.debug("built %s slice %dx%d at %.3f mm spacing", level.value, rows, columns, spacing)
    return SliceAnatomy(
        geometry=slice_geometry,
        label_map=label_map.astype(np.uint8),
        endo_contour_px=endo,
        epi_contour_px=epi,
        lv_centre_px=(float(x_lv), float(y_lv)),
        rv_insertion_px=(
            (float(insertions[0, 0]), float(insertions[0, 1])),
            (float(insertions[1, 0]), float(insertions[1, 1])),
        ),
        aha_segment_map=aha_map,
        t1_ms=t1_map,
        t2_ms=t2_map,
        proton_density=pd_map,
        wall_thickness_mm=wall_thickness,
    )


def _draw_shape(rng: np.random.Generator, level: SliceLevel, geometry: HeartGeometry) -> Shape:
    """Draw the radius functions and surrounding organs of one slice."""
    radius_scale, wall_scale, rv_scale = _LEVEL_SCALE[level]
    theta = np.radians(ANGLE_GRID_DEG)
    # Study-wide shape (ellipticity, wall thickness pattern) from the shared seed, varied a little per slice.
    shared = np.random.default_rng(geometry.shape_seed)
    endo_amp = shared.uniform(0.0, [0.06, 0.03]) * rng.uniform(0.7, 1.3, 2)
    endo_phase = shared.uniform(0.0, 2 * np.pi, 2) + rng.normal(0.0, 0.15, 2)
    wall_amp = shared.normal(0.0, 0.08, 3) * rng.uniform(0.7, 1.3, 3)
    wall_phase = shared.uniform(0.0, 2 * np.pi, 3) + rng.normal(0.0, 0.15, 3)

    endo_radius = geometry.basal_endo_radius_mm * radius_scale * rng.uniform(0.96, 1.04)
    smooth_endo = endo_radius * (
        1.0 + endo_amp[0] * np.cos(2 * theta + endo_phase[0]) + endo_amp[1] * np.cos(3 * theta + endo_phase[1])
    )
    # Trabeculation: fine irregularity of the endocardial border, harmonics 8-24, about 0.3-0.7 mm RMS.
    orders = np.arange(8, 25)
    trab_rms_mm = rng.uniform(0.3, 0.7) * (1.2 if level is SliceLevel.APICAL else 1.0)
    trab_coef = rng.normal(0.0, trab_rms_mm * np.sqrt(2.0 / len(orders)), len(orders))
    trab_phase = rng.uniform(0.0, 2 * np.pi, len(orders))
    trabeculation = (trab_coef[:, None] * np.cos(orders[:, None] * theta[None, :] + trab_phase[:, None])).sum(0)

    wall_mean = geometry.basal_wall_thickness_mm * wall_scale * rng.uniform(0.95, 1.05)
    orders_wall = np.arange(1, 4)
    wall = wall_mean * (
        1.0 + (wall_amp[:, None] * np.cos(orders_wall[:, None] * theta[None, :] + wall_phase[:, None])).sum(0)
    )
    wall = np.clip(wall, *WALL_THICKNESS_LIMITS_MM)
    # The endocardial trabeculation never makes the wall thinner than the limit.
    trabeculation = np.minimum(trabeculation, wall - WALL_THICKNESS_LIMITS_MM[0])
    endo = smooth_endo + trabeculation
    epi = smooth_endo + wall

    # RV: a crescent over the septum between the two insertion points, deepest in the middle.
    anterior_deg = geometry.anterior_insertion_deg + rng.normal(0.0, 3.0)
    span_deg = geometry.septal_span_deg + rng.normal(0.0, 3.0)
    position = np.mod(ANGLE_GRID_DEG - anterior_deg, 360.0) / span_deg
    in_span = position < 1.0
    rv_present = level is not SliceLevel.APICAL or rng.random() < 0.75
    rv_depth_max = geometry.rv_depth_mm * rv_scale * rng.uniform(0.9, 1.1) if rv_present else 0.0
    # Skewed towards the inferior insertion a little, as the RV cavity is at its widest there.
    skew = rng.uniform(0.9, 1.2)
    rv_depth = np.where(in_span, rv_depth_max * np.sin(np.pi * np.clip(position, 0, 1) ** skew) ** 0.6, 0.0)
    rv_wall = np.where(in_span, rng.uniform(2.5, 4.0) * np.clip(rv_depth / 2.0, 0.0, 1.0), 0.0)

    # Epicardial fat: patches at the insertion points (AV groove at the base) and a few elsewhere.
    fat = np.zeros_like(theta)
    level_fat = {SliceLevel.BASAL: 1.0, SliceLevel.MID: 0.7, SliceLevel.APICAL: 0.5}[level]
    centres = [anterior_deg, anterior_deg + span_deg] + list(rng.uniform(0.0, 360.0, int(rng.integers(1, 4))))
    for i, centre in enumerate(centres):
        amplitude = (rng.uniform(3.0, 8.0) if i < 2 else rng.uniform(1.0, 4.0)) * level_fat
        width = rng.uniform(12.0, 28.0)
        distance = np.mod(ANGLE_GRID_DEG - centre + 180.0, 360.0) - 180.0
        fat += amplitude * np.exp(-0.5 * (distance / width) ** 2)
    fat = np.where(fat > 0.6, fat, 0.0)

    papillary: list[tuple[float, float, float, float, float]] = []
    if level is not SliceLevel.APICAL:
        size = 1.0 if level is SliceLevel.MID else 0.7
        for angle_deg in (anterior_deg - 80.0 + rng.normal(0, 8), anterior_deg + 170.0 + rng.normal(0, 8)):
            semi_a = size * rng.uniform(4.0, 6.5)
            semi_b = size * rng.uniform(3.0, 4.5)
            wall_radius = float(Shape.at(smooth_endo, np.array([np.mod(angle_deg, 360.0)]))[0])
            distance = wall_radius - 0.75 * semi_b
            rad = np.radians(angle_deg)
            # The long axis of the blob runs along the wall (tangential).
            papillary.append((distance * np.cos(rad), -distance * np.sin(rad), semi_a, semi_b, float(rad)))

    heart_outer = epi + rv_depth + rv_wall + fat
    body = _place_body(rng, heart_outer)
    diaphragm = _place_diaphragm(rng, level, epi + rv_depth + rv_wall + fat)
    has_spleen = diaphragm is not None and level is not SliceLevel.APICAL and rng.random() < 0.35
    return Shape(
        endo_mm=endo,
        epi_mm=epi,
        rv_depth_mm=rv_depth,
        rv_wall_mm=rv_wall,
        fat_mm=fat,
        papillary=tuple(papillary),
        body=body,
        diaphragm=diaphragm,
        has_spleen=has_spleen,
        anterior_insertion_deg=float(np.mod(anterior_deg, 360.0)),
        septal_span_deg=float(span_deg),
    )


def _place_body(rng: np.random.Generator, heart_outer_mm: np.ndarray) -> tuple[float, float, float, float, float]:
    """Body ellipse (centre, semi-axes) and chest wall thickness, with lung between heart and chest wall."""
    semi_u = rng.uniform(150.0, 180.0)
    semi_v = rng.uniform(105.0, 125.0)
    wall = rng.uniform(18.0, 30.0)
    centre_u = rng.uniform(-40.0, -20.0)
    gap = rng.uniform(4.0, 15.0)
    theta = np.radians(ANGLE_GRID_DEG)
    u = (heart_outer_mm + gap) * np.cos(theta)
    v = -(heart_outer_mm + gap) * np.sin(theta)
    # Smallest downward shift of the body that keeps the heart (plus a gap of lung) inside the thorax.
    for centre_v in np.linspace(0.0, 90.0, 181):
        inside = ((u - centre_u) / (semi_u - wall)) ** 2 + ((v - centre_v) / (semi_v - wall)) ** 2
        if inside.max() <= 1.0:
            return (centre_u, float(centre_v), semi_u, semi_v, wall)
    raise AnatomyError("the heart does not fit in the body ellipse")


def _place_diaphragm(
    rng: np.random.Generator, level: SliceLevel, heart_outer_mm: np.ndarray
) -> tuple[float, float, float] | None:
    """Dome of the diaphragm below the heart: liver on the patient's right (image left), spleen on the left."""
    probability = {SliceLevel.BASAL: 0.9, SliceLevel.MID: 0.6, SliceLevel.APICAL: 0.5}[level]
    if rng.random() >= probability:
        return None
    theta = np.radians(ANGLE_GRID_DEG)
    heart_bottom = float((-heart_outer_mm * np.sin(theta)).max())
    top = heart_bottom + rng.uniform(3.0, 12.0) + (0.0 if level is SliceLevel.BASAL else rng.uniform(0.0, 20.0))
    return (top, float(rng.uniform(0.004, 0.012)), float(rng.uniform(0.0, 30.0)))


def _label_points(shape: Shape, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue label at in-plane points (mm around the LV centre); also their radius and display angle."""
    u, v = np.broadcast_arrays(u, v)
    radius = np.hypot(u, v)
    theta = np.mod(np.degrees(np.arctan2(-v, u)), 360.0)
    centre_u, centre_v, semi_u, semi_v, wall = shape.body
    body = ((u - centre_u) / semi_u) ** 2 + ((v - centre_v) / semi_v) ** 2
    thorax = ((u - centre_u) / (semi_u - wall)) ** 2 + ((v - centre_v) / (semi_v - wall)) ** 2
    labels = np.full(u.shape, Tissue.BACKGROUND, dtype=np.uint8)
    labels[body <= 1.0] = Tissue.CHEST_WALL
    in_thorax = thorax <= 1.0
    labels[in_thorax] = Tissue.LUNG
    if shape.diaphragm is not None:
        top, curvature, split = shape.diaphragm
        below = in_thorax & (v > top + curvature * (u - split / 2.0) ** 2)
        labels[below & (u <= split)] = Tissue.LIVER
        if shape.has_spleen:
            labels[below & (u > split + 25.0)] = Tissue.SPLEEN

    epi = Shape.at(shape.epi_mm, theta)
    near = radius < epi + 60.0  # the heart lies within this radius; skip the rest
    r, th, e = radius[near], theta[near], epi[near]
    rv_outer = e + Shape.at(shape.rv_depth_mm, th)
    wall_outer = rv_outer + Shape.at(shape.rv_wall_mm, th)
    fat_outer = wall_outer + Shape.at(shape.fat_mm, th)
    endo = Shape.at(shape.endo_mm, th)
    sub = labels[near]
    sub[(r >= wall_outer) & (r < fat_outer)] = Tissue.EPICARDIAL_FAT
    sub[(r >= rv_outer) & (r < wall_outer)] = Tissue.RV_WALL
    sub[(r >= e) & (r < rv_outer)] = Tissue.RV_BLOOD
    sub[(r >= endo) & (r < e)] = Tissue.MYOCARDIUM
    cavity = r < endo
    sub[cavity] = Tissue.LV_BLOOD
    uu, vv = u[near], v[near]
    for pu, pv, semi_a, semi_b, angle in shape.papillary:
        # Blob axes: ``a`` tangential to the wall, ``b`` radial.
        du, dv = uu - pu, vv - pv
        radial = du * np.cos(angle) - dv * np.sin(angle)
        tangential = du * np.sin(angle) + dv * np.cos(angle)
        blob = (tangential / semi_a) ** 2 + (radial / semi_b) ** 2 <= 1.0
        sub[blob & cavity] = Tissue.PAPILLARY
    labels[near] = sub
    return labels, radius, theta


def _property_maps(
    shape: Shape,
    properties: dict[Tissue, TissueProperties],
    pathology: Pathology | None,
    level: SliceLevel,
    centre_labels: np.ndarray,
    x_lv: float,
    y_lv: float,
    spacing: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 and proton density maps, area-averaged over SUPERSAMPLING x SUPERSAMPLING sub-pixels.

    Only pixels on or next to a label border are supersampled (elsewhere every sub-pixel has the centre's label).
    Mixed pixels take the proton-density-weighted mean of T1 and T2 of their sub-pixels.
    """
    rows, columns = centre_labels.shape
    t1_lut = np.array([properties[t].t1_ms for t in Tissue], dtype=np.float64)
    t2_lut = np.array([properties[t].t2_ms for t in Tissue], dtype=np.float64)
    pd_lut = np.array([properties[t].proton_density for t in Tissue], dtype=np.float64)

    border = np.zeros(centre_labels.shape, dtype=bool)
    border[:, 1:] |= centre_labels[:, 1:] != centre_labels[:, :-1]
    border[:, :-1] |= centre_labels[:, 1:] != centre_labels[:, :-1]
    border[1:, :] |= centre_labels[1:, :] != centre_labels[:-1, :]
    border[:-1, :] |= centre_labels[1:, :] != centre_labels[:-1, :]
    border = ndimage.binary_dilation(border, iterations=1)

    def properties_at(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        labels, radius, theta = _label_points(shape, (x - x_lv) * spacing, (y - y_lv) * spacing)
        t1, t2, pd = t1_lut[labels], t2_lut[labels], pd_lut[labels]
        if pathology is not None:
            myo = labels == Tissue.MYOCARDIUM
            weight = pathology_weight(shape, pathology, level, radius[myo], theta[myo])
            t1[myo] *= 1.0 + (pathology.t1_factor - 1.0) * weight
            t2[myo] *= 1.0 + (pathology.t2_factor - 1.0) * weight
        return t1, t2, pd

    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float64)
    t1_map, t2_map, pd_map = properties_at(xx, yy)

    n = SUPERSAMPLING
    offsets = (np.arange(n) + 0.5) / n - 0.5
    sub_y, sub_x = (a.ravel() for a in np.meshgrid(offsets, offsets, indexing="ij"))
    by, bx = np.nonzero(border)
    t1, t2, pd = properties_at(bx[:, None] + sub_x[None, :], by[:, None] + sub_y[None, :])
    weights = pd + 1e-6  # keeps air pixels finite
    weight_sum = weights.sum(axis=1)
    t1_map[by, bx] = (weights * t1).sum(axis=1) / weight_sum
    t2_map[by, bx] = (weights * t2).sum(axis=1) / weight_sum
    pd_map[by, bx] = pd.mean(axis=1)
    return t1_map.astype(np.float32), t2_map.astype(np.float32), pd_map.astype(np.float32)


def pathology_weight(
    shape: Shape, pathology: Pathology, level: SliceLevel, radius: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """0..1 extent of the lesion at myocardial points: whole wall for diffuse change, tapered arcs for focal."""
    if not pathology.kind.is_focal:
        return np.ones_like(radius)
    segments = segment_of_angle(theta, level, shape.anterior_insertion_deg, shape.septal_span_deg)
    inside = np.isin(segments, pathology.segments)
    # Taper over the outer 10 deg of the affected arc so the lesion fades at its borders.
    grid_inside = np.isin(
        segment_of_angle(ANGLE_GRID_DEG, level, shape.anterior_insertion_deg, shape.septal_span_deg),
        pathology.segments,
    ).astype(np.float64)
    kernel = np.ones(57) / 57.0  # about 10 deg on the 2048-sample grid
    smooth = np.convolve(np.concatenate([grid_inside[-28:], grid_inside, grid_inside[:28]]), kernel, "valid")
    angular = np.where(inside, Shape.at(smooth, theta), 0.0)
    # Scar and oedema reach from the endocardium through part or all of the wall.
    endo = Shape.at(shape.endo_mm, theta)
    epi = Shape.at(shape.epi_mm, theta)
    depth = np.clip((radius - endo) / np.maximum(epi - endo, 1e-3), 0.0, 1.0)
    transmural_extent = 0.6 if pathology.kind is PathologyKind.FOCAL_FIBROSIS else 1.0
    radial = np.clip((transmural_extent + 0.1 - depth) / 0.2, 0.0, 1.0)
    return angular * radial


def polar_to_px(radius_mm: np.ndarray, theta_deg: np.ndarray, x_lv: float, y_lv: float, spacing: float) -> np.ndarray:
    rad = np.radians(theta_deg)
    x = x_lv + radius_mm * np.cos(rad) / spacing
    y = y_lv - radius_mm * np.sin(rad) / spacing
    return np.stack([x, y], axis=1).astype(np.float64)


def slice_orientation(
    geometry: HeartGeometry, orientation: tuple[float, float, float, float, float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    if orientation is None:
        return np.asarray(geometry.row_direction), np.asarray(geometry.column_direction)
    values = np.asarray(orientation, dtype=np.float64)
    if values.shape != (6,):
        raise AnatomyError(f"orientation must have 6 direction cosines, got {orientation}")
    row, col = values[:3], values[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-4 or abs(np.linalg.norm(col) - 1) > 1e-4 or abs(np.dot(row, col)) > 1e-4:
        raise AnatomyError(f"orientation must be two orthogonal unit vectors, got {orientation}")
    return row, col


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def _as_tuple(vector: np.ndarray) -> tuple[float, float, float]:
    """A 3-vector (direction or position in patient mm) rounded to 8 decimals."""
    x, y, z = (round(float(value), 8) for value in vector)
    return (x, y, z)
