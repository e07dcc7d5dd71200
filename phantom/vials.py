"""A non-cardiac study: a T1 phantom of vials in a water bath, as sites scan (e.g. the T1MES phantom) to check their
mapping sequences.

Nine vials of doped agarose with T1 300-3600 ms (geometric steps) stand in a 3 x 3 grid in a round water bath,
imaged in one transverse slice through the isocentre. Each vial is a disc (inner radius 12 mm) inside a plastic wall
(1.2 mm, no signal); the bath (radius 80 mm) sits in a container wall (4 mm, no signal) in air. T2 follows T1 as in
doped agarose (0.08 x T1, within 40-300 ms). Proton density is 0.95 in the vials and 1 in the bath. Relaxation
times and proton density are area averages over 4 x 4 sub-pixels, so the vial borders have partial volume. There
is no heart: no myocardium, no contours, no AHA segments.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from phantom.model import SliceAnatomy, SliceGeometry, SliceLevel

LOGGER = logging.getLogger(__name__)

VIAL_T1_MS: tuple[float, ...] = tuple(float(round(value)) for value in np.geomspace(300.0, 3600.0, 9))
VIAL_T2_FRACTION = 0.08
VIAL_T2_RANGE_MS = (40.0, 300.0)
VIAL_PROTON_DENSITY = 0.95
VIAL_RADIUS_MM = 12.0
VIAL_WALL_MM = 1.2
VIAL_PITCH_MM = 32.0
#: Pixels whose centre lies within this fraction of a vial's radius form its region of interest (no partial volume).
ROI_RADIUS_FRACTION = 0.7
BATH_T1_MS = 3000.0
BATH_T2_MS = 1000.0
BATH_PROTON_DENSITY = 1.0
BATH_RADIUS_MM = 80.0
CONTAINER_WALL_MM = 4.0
SLICE_THICKNESS_MM = 8.0
_SUBSAMPLES = 4


class VialPhantomError(ValueError):
    """The requested image cannot hold the vial phantom."""


@dataclass(frozen=True)
class Vial:
    """One vial: where it is and what it holds."""

    number: int  # 1-based, row by row from the top left of the grid
    centre_px: tuple[float, float]  # (x, y)
    radius_mm: float
    t1_ms: float
    t2_ms: float


@dataclass(frozen=True)
class VialPhantom:
    """The slice (as a :class:`SliceAnatomy` without a heart), its vials and their regions of interest."""

    anatomy: SliceAnatomy
    vials: tuple[Vial, ...]
    roi_labels: np.ndarray  # (rows, columns) uint8: 0 outside every ROI, else the vial number
    rotation_deg: float

    @property
    def roi_mask(self) -> np.ndarray:
        return self.roi_labels > 0


def vial_t2_ms(t1_ms: float) -> float:
    """T2 of a vial of the given T1 (doped agarose)."""
    low, high = VIAL_T2_RANGE_MS
    return float(np.clip(VIAL_T2_FRACTION * t1_ms, low, high))


def make_vial_phantom(rng: np.random.Generator, *, matrix: tuple[int, int], pixel_spacing_mm: float) -> VialPhantom:
    """Place the vials (grid rotated by 0-30 deg, each centre jittered by 0.5 mm SD) in one transverse slice.

    Parameters
    ----------
    rng
        Draws the grid rotation and the jitter.
    matrix
        (rows, columns).
    pixel_spacing_mm
        Square pixel size.

    Raises
    ------
    VialPhantomError
        If the field of view is smaller than the container.
    """
    rows, columns = matrix
    outer_mm = BATH_RADIUS_MM + CONTAINER_WALL_MM
    if min(rows, columns) * pixel_spacing_mm < 2.0 * outer_mm:
        raise VialPhantomError(
            f"field of view {rows * pixel_spacing_mm:.0f} x {columns * pixel_spacing_mm:.0f} mm cannot hold the "
            f"container of {2 * outer_mm:.0f} mm; expected at least that in both directions"
        )
    rotation_deg = float(rng.uniform(0.0, 30.0))
    angle = np.radians(rotation_deg)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre_x, centre_y = (columns - 1) / 2.0, (rows - 1) / 2.0
    vials = []
    for number, t1_ms in enumerate(VIAL_T1_MS, start=1):
        grid = np.array([((number - 1) % 3 - 1) * VIAL_PITCH_MM, ((number - 1) // 3 - 1) * VIAL_PITCH_MM])
        u_mm, v_mm = rotation @ grid + rng.normal(0.0, 0.5, 2)
        vials.append(Vial(
            number=number,
            centre_px=(centre_x + u_mm / pixel_spacing_mm, centre_y + v_mm / pixel_spacing_mm),
            radius_mm=VIAL_RADIUS_MM,
            t1_ms=t1_ms,
            t2_ms=vial_t2_ms(t1_ms),
        ))

    # Properties at 4 x 4 sub-pixels, averaged per pixel (relaxation times weighted by proton density).
    offsets = (np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5
    y = (np.arange(rows)[:, None] + offsets[None, :]).reshape(-1)
    x = (np.arange(columns)[:, None] + offsets[None, :]).reshape(-1)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    pd, t1, t2 = _properties(xx, yy, vials, (centre_x, centre_y), pixel_spacing_mm)
    shape = (rows, _SUBSAMPLES, columns, _SUBSAMPLES)
    pd_sum = pd.reshape(shape).sum(axis=(1, 3))
    weights = np.where(pd_sum > 0, pd_sum, 1.0)
    t1_map = (pd * t1).reshape(shape).sum(axis=(1, 3)) / weights
    t2_map = (pd * t2).reshape(shape).sum(axis=(1, 3)) / weights
    pd_map = pd_sum / _SUBSAMPLES**2
    t1_map = np.where(pd_sum > 0, t1_map, BATH_T1_MS)  # no signal there; any valid time will do
    t2_map = np.where(pd_sum > 0, t2_map, BATH_T2_MS)

    pixel_y, pixel_x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    roi_labels = np.zeros((rows, columns), dtype=np.uint8)
    for vial in vials:
        distance_mm = np.hypot(pixel_x - vial.centre_px[0], pixel_y - vial.centre_px[1]) * pixel_spacing_mm
        roi_labels[distance_mm <= ROI_RADIUS_FRACTION * vial.radius_mm] = vial.number

    geometry = SliceGeometry(
        rows=rows,
        columns=columns,
        pixel_spacing_mm=(pixel_spacing_mm, pixel_spacing_mm),
        slice_thickness_mm=SLICE_THICKNESS_MM,
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),  # transverse, isocentre at the image centre
        image_position_patient_mm=(-centre_x * pixel_spacing_mm, -centre_y * pixel_spacing_mm, 0.0),
        slice_location_mm=0.0,
        level=SliceLevel.MID,  # no level in a phantom; the slot must hold one
    )
    anatomy = SliceAnatomy(
        geometry=geometry,
        label_map=np.zeros((rows, columns), dtype=np.uint8),  # no tissue of the heart phantom's labels
        endo_contour_px=np.zeros((0, 2)),
        epi_contour_px=np.zeros((0, 2)),
        lv_centre_px=(centre_x, centre_y),  # the coil field is centred here
        rv_insertion_px=((centre_x, centre_y), (centre_x, centre_y)),
        aha_segment_map=np.zeros((rows, columns), dtype=np.uint8),
        t1_ms=t1_map.astype(np.float32),
        t2_ms=t2_map.astype(np.float32),
        proton_density=pd_map.astype(np.float32),
        wall_thickness_mm={},
    )
    LOGGER.debug("vial phantom %d x %d at %.2f mm, grid rotated %.1f deg", rows, columns, pixel_spacing_mm,
                 rotation_deg)
    return VialPhantom(anatomy=anatomy, vials=tuple(vials), roi_labels=roi_labels, rotation_deg=rotation_deg)


def _properties(x: np.ndarray, y: np.ndarray, vials: list[Vial], centre_px: tuple[float, float],
                spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proton density, T1 and T2 at the points (x, y) in pixels."""
    radius_mm = np.hypot(x - centre_px[0], y - centre_px[1]) * spacing_mm
    pd = np.where(radius_mm <= BATH_RADIUS_MM, BATH_PROTON_DENSITY, 0.0)
    t1 = np.full(x.shape, BATH_T1_MS)
    t2 = np.full(x.shape, BATH_T2_MS)
    for vial in vials:
        distance_mm = np.hypot(x - vial.centre_px[0], y - vial.centre_px[1]) * spacing_mm
        inside = distance_mm <= vial.radius_mm
        wall = (distance_mm > vial.radius_mm) & (distance_mm <= vial.radius_mm + VIAL_WALL_MM)
        pd[wall] = 0.0
        pd[inside] = VIAL_PROTON_DENSITY
        t1[inside] = vial.t1_ms
        t2[inside] = vial.t2_ms
    return pd, t1, t2
