"""Breathing motion during a breath-hold: which frames move, how far, and which AHA segments it spoils.

A displaced frame moves the tissue by a translation, a rotation about the LV centre and a smooth sinusoidal
deformation, all in the image plane. ``displacement_field`` gives the displacement of the tissue that starts at each
pixel (in pixels); the image formation shows a displaced frame by sampling the property maps at ``p - d(p)``.

Motion rule (docs/phantom.md): an AHA segment is labelled as having a motion artefact when, in any frame, the mean
displacement of the myocardial border points in that segment across the border (the component along the border's
normal, endocardial and epicardial contour points together) exceeds half of that segment's mean wall thickness.
Only motion across the border misregisters tissue: a border that slides along itself leaves myocardium on
myocardium, so the fit and the map do not change there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from phantom.anatomy import contour_segments
from phantom.model import FrameMotion, SliceAnatomy, SliceGeometry
from phantom.tissue import level_segments

LOGGER = logging.getLogger(__name__)

MOTION_THRESHOLD_WALL_FRACTION = 0.5
STILL = FrameMotion(translation_mm=(0.0, 0.0), rotation_deg=0.0, deformation_mm=0.0)


class MotionError(ValueError):
    """Motion parameters that do not fit the series (wrong frame count, bad probability)."""


def sample_breathing(rng: np.random.Generator, n_images: int, *, motion_probability: float) -> tuple[FrameMotion, ...]:
    """Draw the motion of every frame of one series.

    Most series are still. With ``motion_probability`` the series has 1-3 displaced frames: a translation of
    1-7 mm mostly along the column direction (the diaphragm moves up and down), a rotation of up to 6 deg and a
    smooth deformation of 0.5-3.5 mm.

    Raises
    ------
    MotionError
        If ``n_images`` < 2 or ``motion_probability`` is outside [0, 1].
    """
    if n_images < 2:
        raise MotionError(f"n_images must be at least 2, got {n_images}")
    if not 0.0 <= motion_probability <= 1.0:
        raise MotionError(f"motion_probability must be in [0, 1], got {motion_probability}")
    frames = [STILL] * n_images
    if rng.random() >= motion_probability:
        return tuple(frames)
    count = int(rng.integers(1, min(3, n_images - 1) + 1))
    for index in rng.choice(n_images, size=count, replace=False):
        magnitude = float(rng.uniform(1.0, 7.0))
        direction = np.radians(rng.normal(90.0, 25.0)) + (np.pi if rng.random() < 0.5 else 0.0)
        frames[int(index)] = FrameMotion(
            translation_mm=(
                round(magnitude * float(np.cos(direction)), 4),
                round(magnitude * float(np.sin(direction)), 4),
            ),
            rotation_deg=round(float(rng.uniform(-6.0, 6.0)), 4),
            deformation_mm=round(float(rng.uniform(0.5, 3.5)), 4),
            deformation_phase_rad=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
            deformation_wavelength_mm=float(rng.uniform(80.0, 160.0)),
        )
    return tuple(frames)


def displacement_mm(frame: FrameMotion, u_mm: np.ndarray, v_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue displacement (mm, along x and y) at in-plane points given in mm relative to the rotation centre."""
    angle = np.radians(frame.rotation_deg)
    cos_a, sin_a = np.cos(angle), np.sin(angle)
    # Counter-clockwise on the screen (y points down in the image).
    du = frame.translation_mm[0] + (cos_a - 1.0) * u_mm + sin_a * v_mm
    dv = frame.translation_mm[1] - sin_a * u_mm + (cos_a - 1.0) * v_mm
    if frame.deformation_mm:
        k = 2 * np.pi / frame.deformation_wavelength_mm
        du = du + frame.deformation_mm * np.sin(k * v_mm + frame.deformation_phase_rad[0])
        dv = dv + frame.deformation_mm * np.sin(k * u_mm + frame.deformation_phase_rad[1])
    return np.asarray(du, dtype=np.float64), np.asarray(dv, dtype=np.float64)


def displacement_field(frame: FrameMotion, geometry: SliceGeometry, *, centre_px: tuple[float, float]) -> np.ndarray:
    """Displacement of the tissue starting at each pixel, (2, rows, columns): (dx, dy) in pixels.

    Parameters
    ----------
    frame
        Motion of the frame.
    geometry
        The slice (matrix and pixel spacing).
    centre_px
        (x, y) centre of rotation, the LV centre.
    """
    row_spacing, column_spacing = geometry.pixel_spacing_mm
    y, x = np.mgrid[0 : geometry.rows, 0 : geometry.columns].astype(np.float64)
    du, dv = displacement_mm(frame, (x - centre_px[0]) * column_spacing, (y - centre_px[1]) * row_spacing)
    return np.stack([du / column_spacing, dv / row_spacing])


def border_points_by_segment(anatomy: SliceAnatomy) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Endocardial and epicardial contour points (x, y) of each AHA segment with their unit normals (x, y)."""
    contours = (anatomy.endo_contour_px, anatomy.epi_contour_px)
    points = np.concatenate(contours)
    normals = np.concatenate([_unit_normals(c) for c in contours])
    segments = np.concatenate([contour_segments(anatomy, c) for c in contours])
    return {s: (points[segments == s], normals[segments == s]) for s in level_segments(anatomy.geometry.level)}


def _unit_normals(contour_px: np.ndarray) -> np.ndarray:
    """Unit normals of a closed contour from the central-difference tangent (orientation does not matter here)."""
    tangent = np.roll(contour_px, -1, axis=0) - np.roll(contour_px, 1, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
    length = np.hypot(normal[:, 0], normal[:, 1])
    return normal / np.where(length > 0, length, 1.0)[:, None]


def segment_border_displacement_mm(anatomy: SliceAnatomy, frame: FrameMotion) -> dict[int, float]:
    """Mean displacement across the border (mm, absolute normal component) of each segment's border points."""
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    out = {}
    for segment, (points, normals) in border_points_by_segment(anatomy).items():
        du, dv = displacement_mm(frame, (points[:, 0] - cx) * column_spacing, (points[:, 1] - cy) * row_spacing)
        # Normals are in pixel axes; with square pixels they are the same directions in mm.
        across_mm = np.abs(du * normals[:, 0] + dv * normals[:, 1])
        out[segment] = float(across_mm.mean()) if len(points) else 0.0
    return out


def motion_labels(anatomy: SliceAnatomy, motions: Sequence[FrameMotion]) -> dict[int, bool]:
    """Motion artefact label of each AHA segment of the slice, by the rule in the module docstring."""
    labels = {segment: False for segment in level_segments(anatomy.geometry.level)}
    for frame in motions:
        if frame.is_still:
            continue
        for segment, displacement in segment_border_displacement_mm(anatomy, frame).items():
            threshold = MOTION_THRESHOLD_WALL_FRACTION * anatomy.wall_thickness_mm[segment]
            labels[segment] = labels[segment] or displacement > threshold
    return labels
