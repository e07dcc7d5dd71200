"""Scoring a trainee's myocardium against a reference (gold standard or consensus) and naming the error made.

The error features describe how the trainee's borders depart from the reference's in the terms that drive contour
variability (displacement, border offsets, roughness, missing wall, what tissue was added); a small set of rules
over them names the error mode. Borders are sampled as radius against angle along rays from the reference's
centre, so the features do not depend on how the masks were drawn.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy import ndimage

from inference.errors import AnalysisError, ShapeMismatchError
from inference.metrics import dice, iou, mask_surface_distances_mm

LOGGER = logging.getLogger(__name__)

N_RAYS = 360
# Fourier orders of a border's radius profile: shape detail (what a smoothed border loses) and roughness (what a
# jagged border gains). Orders above the roughness band are mostly pixel staircase.
_DETAIL_ORDERS = (3, 8)
_ROUGHNESS_ORDERS = (9, 40)
# A ray whose trainee wall is thinner than this fraction of the reference wall counts as missed wall.
_MISSED_WALL_FRACTION = 0.5
_MIN_ADDED_PIXELS = 3

# Classification thresholds (see classify_error_mode), set on phantom trainees of seeds 1000-1059 and 2000-2059.
SHIFT_MM = 2.0  # mean displacement of the cavity and epicardial centroids
BORDER_SHIFT_MM = 1.5  # displacement each border must reach on its own
SHIFT_AGREEMENT = 0.7  # cosine between the two displacements
MISSED_GAP_DEG = 20.0  # sector with under half the reference wall
EPI_GROWTH = 0.08  # relative growth of the epicardial region
FAT_FRACTION = 0.08  # fat-like added pixels outside the reference epicardium, per reference myocardium area
FAT_T1_POSITION = -0.5  # map value counted fat-like, on the myocardium-0 / blood-1 scale
SMOOTH_DETAIL_PX = 0.2  # shape detail within the rasterisation floor (pixels)
SMOOTH_DETAIL_RATIO = 0.9  # ... and clearly less than the reference's
MUSCLE_FRACTION = 0.02  # muscle-like added pixels inside the reference cavity, per reference myocardium area
MUSCLE_SHARE = 0.25  # ... and their share of all pixels added inside the cavity
BLOOD_T1_POSITION = 0.5  # below this the map value counts as muscle, not blood
JAGGED_ROUGHNESS_RATIO = 1.6
CAVITY_SHRINK = 0.03  # relative shrinkage of the cavity
ADDED_FRACTION = 0.08  # added pixels inside the reference cavity, per reference myocardium area


class ScoringError(AnalysisError):
    """A trainee's or reference's masks cannot be scored (empty, no cavity, bad spacing)."""


class ErrorMode(str, Enum):
    """How a trainee's contour departs from the reference (values as the phantom's readers record them)."""

    GOOD = "good"
    SHIFTED = "shifted"  # both borders displaced together
    EPICARDIAL_FAT = "epicardial_fat"  # epicardial border drawn outside the fat
    BLOOD_POOL = "blood_pool"  # endocardial border drawn inside the blood pool
    PAPILLARY = "papillary"  # papillary muscles included in the myocardium
    TOO_SMOOTH = "too_smooth"  # borders reduced to a near-ellipse
    JAGGED = "jagged"  # high-frequency wobble of both borders
    PART_MISSED = "part_missed"  # a sector of the wall left out


@dataclass(frozen=True)
class TraineeScore:
    """A trainee's myocardium compared with a reference."""

    dice_myocardium: float
    iou_myocardium: float
    dice_cavity: float
    hausdorff_mm: float
    mean_surface_distance_mm: float
    t1_difference_ms: float  # trainee mean minus reference mean, each over its own myocardium
    wall_thickness_difference_mm: float  # trainee minus reference, equivalent-circle mean wall thickness
    error_mode: ErrorMode
    error_features: dict[str, float] = field(default_factory=dict)
    reference: str = ""


def _spacing(pixel_spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    values = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ScoringError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm}")
    return float(values[0]), float(values[1])


def _check(masks: dict[str, np.ndarray], map_ms: np.ndarray) -> None:
    shape = np.shape(map_ms)
    for name, mask in masks.items():
        if np.shape(mask) != shape:
            raise ShapeMismatchError(f"{name} has shape {np.shape(mask)}, expected {shape} like map_ms")
        if not np.any(mask):
            raise ScoringError(f"{name} is empty, expected at least one pixel")


class _Rays:
    """Rays from the reference centre, sampled finely enough to place a border to a fraction of a pixel."""

    def __init__(self, centre_rc: np.ndarray, spacing: tuple[float, float], reach_mm: float) -> None:
        row_mm, column_mm = spacing
        self.step_mm = 0.25 * min(spacing)
        self.radii_mm = np.arange(0.0, reach_mm, self.step_mm)
        self.theta = np.arange(N_RAYS) * (2 * np.pi / N_RAYS)
        # Display angles: counter-clockwise on the screen, y up.
        self.x = centre_rc[1] + self.radii_mm[:, None] * np.cos(self.theta)[None, :] / column_mm
        self.y = centre_rc[0] - self.radii_mm[:, None] * np.sin(self.theta)[None, :] / row_mm

    def inside(self, mask: np.ndarray) -> np.ndarray:
        """(n_radii, n_rays) bool: the ray sample lies in ``mask`` (bilinear, so borders are sub-pixel)."""
        values = ndimage.map_coordinates(mask.astype(np.float64), [self.y, self.x], order=1, mode="constant")
        return values >= 0.5

    def border_mm(self, region: np.ndarray) -> np.ndarray:
        """Per ray, the radius (mm) where the ray first leaves ``region``."""
        inside = self.inside(region)
        leaving = np.argmin(inside, axis=0)  # first sample outside
        leaving = np.where(inside.all(axis=0), inside.shape[0] - 1, leaving)
        return self.radii_mm[leaving]

    def length_mm(self, mask: np.ndarray) -> np.ndarray:
        """Per ray, the length (mm) of the ray inside ``mask``."""
        return self.inside(mask).sum(axis=0) * self.step_mm


def _band_rms(profile_mm: np.ndarray, orders: tuple[int, int]) -> float:
    spectrum = np.fft.rfft(profile_mm) / profile_mm.size
    band = spectrum[orders[0] : orders[1] + 1]
    return float(np.sqrt(2.0 * np.sum(np.abs(band) ** 2)))


def _largest_circular_run(flags: np.ndarray) -> int:
    """Length of the longest run of True in a circular sequence."""
    if flags.all():
        return flags.size
    start = int(np.argmin(flags))  # begin at a False so no run wraps
    rolled = np.roll(flags, -start)
    best = run = 0
    for flag in rolled:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _centroid_mm(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    rows, columns = np.nonzero(mask)
    return np.array([columns.mean() * spacing[1], rows.mean() * spacing[0]])


def _median_position(position: np.ndarray) -> float:
    """Median of map values already on the myocardium-0 / blood-1 scale; NaN when too few pixels to judge."""
    return float(np.median(position)) if position.size >= _MIN_ADDED_PIXELS else float("nan")


def error_features(
    trainee_myocardium: np.ndarray,
    trainee_cavity: np.ndarray,
    reference_myocardium: np.ndarray,
    reference_cavity: np.ndarray,
    map_ms: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
) -> dict[str, float]:
    """Features of how the trainee's borders depart from the reference's.

    Returns
    -------
    dict
        ``centroid_shift_mm`` (displacement of the mean of the cavity and epicardial-region centroids),
        ``cavity_shift_mm`` and ``epi_shift_mm`` (each on its own), ``shift_agreement`` (cosine between the two,
        1 when both borders move together), ``endo_area_change`` and ``epi_area_change`` (relative),
        ``endo_offset_mm`` and ``epi_offset_mm`` (mean signed radial offsets, outward positive), ``detail_mm``
        (border shape detail: rms of Fourier orders 3-8 of the radius profiles), ``detail_pixels`` (the same in
        pixels), ``detail_ratio`` (relative to the reference), ``roughness_mm`` and ``roughness_ratio`` (orders
        9-40), ``missed_wall_gap_deg`` (largest sector whose wall is under half the reference's),
        ``added_outside_fraction`` and ``added_inside_fraction`` (trainee myocardium outside the reference
        epicardium / inside the reference cavity, per reference myocardium area), ``added_outside_t1_position``
        and ``added_inside_t1_position`` (median map value there on a scale with reference myocardium at 0 and
        reference blood at 1; NaN under 3 pixels), ``added_outside_fat_fraction`` (added pixels outside that are
        fat-like, below ``FAT_T1_POSITION``) and ``added_inside_muscle_fraction`` (added pixels inside that are
        muscle-like, below ``BLOOD_T1_POSITION``), per reference myocardium area.

    Raises
    ------
    ShapeMismatchError
        If a mask differs in shape from ``map_ms``.
    ScoringError
        If a mask is empty or the spacing is not positive.
    """
    masks = {
        "trainee_myocardium": np.asarray(trainee_myocardium, dtype=bool),
        "trainee_cavity": np.asarray(trainee_cavity, dtype=bool),
        "reference_myocardium": np.asarray(reference_myocardium, dtype=bool),
        "reference_cavity": np.asarray(reference_cavity, dtype=bool),
    }
    map_ms = np.asarray(map_ms, dtype=np.float64)
    _check(masks, map_ms)
    spacing = _spacing(pixel_spacing_mm)
    t_myo, t_cav = masks["trainee_myocardium"], masks["trainee_cavity"]
    r_myo, r_cav = masks["reference_myocardium"], masks["reference_cavity"]
    t_epi = ndimage.binary_fill_holes(t_myo | t_cav)
    r_epi = ndimage.binary_fill_holes(r_myo | r_cav)

    # Displacement of each border, from region centroids.
    shift_cavity = _centroid_mm(t_cav, spacing) - _centroid_mm(r_cav, spacing)
    shift_epi = _centroid_mm(t_epi, spacing) - _centroid_mm(r_epi, spacing)
    norms = np.linalg.norm(shift_cavity) * np.linalg.norm(shift_epi)
    agreement = float(shift_cavity @ shift_epi / norms) if norms > 0 else 0.0

    rows, columns = np.nonzero(r_cav)
    centre_rc = np.array([rows.mean(), columns.mean()])
    any_rows, any_columns = np.nonzero(r_epi | t_epi)
    reach_mm = float(
        np.max(np.hypot((any_rows - centre_rc[0]) * spacing[0], (any_columns - centre_rc[1]) * spacing[1]))
    ) + 2.0 * max(spacing)
    rays = _Rays(centre_rc, spacing, reach_mm)
    endo_t, endo_r = rays.border_mm(t_cav), rays.border_mm(r_cav)
    epi_t, epi_r = rays.border_mm(t_epi), rays.border_mm(r_epi)

    def band_mm(endo: np.ndarray, epi: np.ndarray, orders: tuple[int, int]) -> float:
        return float(np.hypot(_band_rms(endo, orders), _band_rms(epi, orders)))

    detail_mm = band_mm(endo_t, epi_t, _DETAIL_ORDERS)
    detail_reference_mm = band_mm(endo_r, epi_r, _DETAIL_ORDERS)
    roughness_mm = band_mm(endo_t, epi_t, _ROUGHNESS_ORDERS)
    roughness_reference_mm = band_mm(endo_r, epi_r, _ROUGHNESS_ORDERS)

    wall_t, wall_r = rays.length_mm(t_myo), rays.length_mm(r_myo)
    missed = wall_t < _MISSED_WALL_FRACTION * wall_r
    gap_deg = _largest_circular_run(missed) * 360.0 / N_RAYS

    reference_area = float(r_myo.sum())
    added_outside = t_myo & ~r_epi
    added_inside = t_myo & r_cav
    myocardium_t1 = float(np.median(map_ms[r_myo]))
    # The cavity's own border is partial volume with the wall: take blood from its interior.
    cavity_core = ndimage.binary_erosion(r_cav)
    blood_t1 = float(np.median(map_ms[cavity_core if cavity_core.any() else r_cav]))
    span_ms = blood_t1 - myocardium_t1
    # A map that does not tell blood from myocardium cannot say what tissue was added: NaN, and no pixel counts.
    position = (map_ms - myocardium_t1) / span_ms if abs(span_ms) > 1e-6 else np.full_like(map_ms, np.nan)
    return {
        "centroid_shift_mm": float(np.linalg.norm(0.5 * (shift_cavity + shift_epi))),
        "shift_agreement": agreement,
        "cavity_shift_mm": float(np.linalg.norm(shift_cavity)),
        "epi_shift_mm": float(np.linalg.norm(shift_epi)),
        "endo_area_change": float(t_cav.sum() / r_cav.sum() - 1.0),
        "epi_area_change": float(t_epi.sum() / r_epi.sum() - 1.0),
        "endo_offset_mm": float(np.mean(endo_t - endo_r)),
        "epi_offset_mm": float(np.mean(epi_t - epi_r)),
        "detail_mm": detail_mm,
        "detail_ratio": detail_mm / max(detail_reference_mm, 1e-9),
        "detail_pixels": detail_mm / min(spacing),
        "roughness_mm": roughness_mm,
        "roughness_ratio": roughness_mm / max(roughness_reference_mm, 1e-9),
        "missed_wall_gap_deg": gap_deg,
        "added_outside_fraction": float(added_outside.sum() / reference_area),
        "added_inside_fraction": float(added_inside.sum() / reference_area),
        "added_outside_t1_position": _median_position(position[added_outside]),
        "added_outside_fat_fraction": float((added_outside & (position < FAT_T1_POSITION)).sum() / reference_area),
        "added_inside_muscle_fraction": float((added_inside & (position < BLOOD_T1_POSITION)).sum() / reference_area),
        "added_inside_t1_position": _median_position(position[added_inside]),
    }


def classify_error_mode(features: dict[str, float]) -> ErrorMode:
    """Name the error mode from :func:`error_features`, by rules tried in this order.

    1. SHIFTED: the cavity and epicardial centroids move by ``SHIFT_MM`` on average, each by at least
       ``BORDER_SHIFT_MM``, in directions whose cosine is at least ``SHIFT_AGREEMENT``.
    2. PART_MISSED: a sector of at least ``MISSED_GAP_DEG`` has under half the reference wall.
    3. EPICARDIAL_FAT: the epicardial region grows by ``EPI_GROWTH`` and fat-like pixels (map value below
       ``FAT_T1_POSITION`` on a scale with reference myocardium at 0 and blood at 1) outside the reference
       epicardium make at least ``FAT_FRACTION`` of the reference myocardium area.
    4. TOO_SMOOTH: border shape detail (Fourier orders 3-8) under ``SMOOTH_DETAIL_PX`` pixels, the floor that
       rasterisation alone leaves, and at most ``SMOOTH_DETAIL_RATIO`` times the reference's.
    5. PAPILLARY: muscle-like pixels (below ``BLOOD_T1_POSITION``) inside the reference cavity make at least
       ``MUSCLE_FRACTION`` of the reference myocardium area and ``MUSCLE_SHARE`` of what was added there.
    6. JAGGED: border roughness (orders 9-40) at least ``JAGGED_ROUGHNESS_RATIO`` times the reference's.
    7. BLOOD_POOL: the cavity shrinks by ``CAVITY_SHRINK`` and the myocardium gains ``ADDED_FRACTION`` inside
       the reference cavity (blood-like, or rule 5 would have fired).
    8. GOOD otherwise.

    Raises
    ------
    ScoringError
        If a feature the rules need is missing.
    """
    missing = sorted(set(_RULE_FEATURES) - set(features))
    if missing:
        raise ScoringError(f"error features {missing} are missing; expected the keys of error_features()")
    f = features
    if (
        f["centroid_shift_mm"] >= SHIFT_MM
        and min(f["cavity_shift_mm"], f["epi_shift_mm"]) >= BORDER_SHIFT_MM
        and f["shift_agreement"] >= SHIFT_AGREEMENT
    ):
        return ErrorMode.SHIFTED
    if f["missed_wall_gap_deg"] >= MISSED_GAP_DEG:
        return ErrorMode.PART_MISSED
    if f["epi_area_change"] >= EPI_GROWTH and f["added_outside_fat_fraction"] >= FAT_FRACTION:
        return ErrorMode.EPICARDIAL_FAT
    if f["detail_pixels"] <= SMOOTH_DETAIL_PX and f["detail_ratio"] <= SMOOTH_DETAIL_RATIO:
        return ErrorMode.TOO_SMOOTH
    if (
        f["added_inside_muscle_fraction"] >= MUSCLE_FRACTION
        and f["added_inside_muscle_fraction"] >= MUSCLE_SHARE * f["added_inside_fraction"]
    ):
        return ErrorMode.PAPILLARY
    if f["roughness_ratio"] >= JAGGED_ROUGHNESS_RATIO:
        return ErrorMode.JAGGED
    if f["endo_area_change"] <= -CAVITY_SHRINK and f["added_inside_fraction"] >= ADDED_FRACTION:
        return ErrorMode.BLOOD_POOL
    return ErrorMode.GOOD


_RULE_FEATURES = (
    "missed_wall_gap_deg",
    "centroid_shift_mm",
    "shift_agreement",
    "cavity_shift_mm",
    "epi_shift_mm",
    "epi_area_change",
    "added_outside_fat_fraction",
    "endo_area_change",
    "added_inside_fraction",
    "added_inside_muscle_fraction",
    "roughness_ratio",
    "detail_ratio",
    "detail_pixels",
)


def _equivalent_wall_thickness_mm(myocardium: np.ndarray, cavity: np.ndarray, pixel_area_mm2: float) -> float:
    """Mean wall thickness of a ring with the same cavity and epicardial areas: r_epi - r_endo of equal circles."""
    epi_area = float(ndimage.binary_fill_holes(myocardium | cavity).sum()) * pixel_area_mm2
    cavity_area = float(cavity.sum()) * pixel_area_mm2
    return float(np.sqrt(epi_area / np.pi) - np.sqrt(cavity_area / np.pi))


def score_trainee(
    trainee_myocardium: np.ndarray,
    trainee_cavity: np.ndarray,
    reference_myocardium: np.ndarray,
    reference_cavity: np.ndarray,
    map_ms: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    *,
    reference_name: str,
) -> TraineeScore:
    """Overlap, surface distances, T1 and wall-thickness differences, and the error mode of a trainee.

    Parameters
    ----------
    trainee_myocardium, trainee_cavity, reference_myocardium, reference_cavity
        Boolean masks of the map's shape.
    map_ms
        The T1 (or T2) map the contours were drawn on.
    pixel_spacing_mm
        (between rows, between columns) as DICOM PixelSpacing, or one value for square pixels.
    reference_name
        What the reference is (e.g. ``"gold_standard"``, ``"staple"``), recorded on the score.

    Raises
    ------
    ShapeMismatchError
        If a mask differs in shape from ``map_ms``.
    ScoringError
        If a mask is empty or the spacing is not positive.
    """
    features = error_features(
        trainee_myocardium, trainee_cavity, reference_myocardium, reference_cavity, map_ms, pixel_spacing_mm
    )
    spacing = _spacing(pixel_spacing_mm)
    t_myo = np.asarray(trainee_myocardium, dtype=bool)
    r_myo = np.asarray(reference_myocardium, dtype=bool)
    t_cav = np.asarray(trainee_cavity, dtype=bool)
    r_cav = np.asarray(reference_cavity, dtype=bool)
    map_ms = np.asarray(map_ms, dtype=np.float64)
    hausdorff, mean_surface = mask_surface_distances_mm(t_myo, r_myo, spacing)
    pixel_area_mm2 = spacing[0] * spacing[1]
    return TraineeScore(
        dice_myocardium=float(dice(t_myo, r_myo)),
        iou_myocardium=float(iou(t_myo, r_myo)),
        dice_cavity=float(dice(t_cav, r_cav)),
        hausdorff_mm=float(hausdorff),
        mean_surface_distance_mm=float(mean_surface),
        t1_difference_ms=float(map_ms[t_myo].mean() - map_ms[r_myo].mean()),
        wall_thickness_difference_mm=_equivalent_wall_thickness_mm(t_myo, t_cav, pixel_area_mm2)
        - _equivalent_wall_thickness_mm(r_myo, r_cav, pixel_area_mm2),
        error_mode=classify_error_mode(features),
        error_features=features,
        reference=reference_name,
    )
