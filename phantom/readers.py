"""Simulated readers: experts with realistic inter-observer variability, trainees with typical error modes.

Every reader's contour is the truth contour in polar form around the LV centre (radius in mm against display
angle), changed by a smooth perturbation and, for trainees, by one error mode. Masks are rasterised from the
sub-pixel polygons with the same convention as the truth (a pixel belongs to a polygon when its centre lies
inside), so a reader who drew the truth gets the truth mask.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.draw import polygon2mask

# One ErrorMode for the simulated trainees and the node's scoring of them (re-exported here for phantom users).
from inference.trainee_scoring import ErrorMode
from phantom.model import ReaderContour, SliceAnatomy, Tissue

LOGGER = logging.getLogger(__name__)

# Smooth perturbation of experts: standard deviation per border, as a fraction of the mean wall thickness, spread
# over a global offset and Fourier orders 1-3. Calibrated to a mean pairwise myocardium Dice of about 0.90.
EXPERT_VARIABILITY_FRACTION = 0.085
_PERTURBATION_ORDERS = np.arange(1, 4)


class ReaderError(ValueError):
    """Reader parameters out of range (number of readers, skill)."""


def truth_contour(anatomy: SliceAnatomy) -> ReaderContour:
    """The ground truth as a reader contour."""
    return ReaderContour(
        reader="truth",
        role="truth",
        endo_contour_px=anatomy.endo_contour_px,
        epi_contour_px=anatomy.epi_contour_px,
        myocardium_mask=anatomy.myocardium_mask,
    )


def myocardium_mask(shape: tuple[int, int], endo_px: np.ndarray, epi_px: np.ndarray) -> np.ndarray:
    """Pixels inside the epicardial and outside the endocardial polygon ((x, y) points)."""
    epi = polygon2mask(shape, np.asarray(epi_px)[:, ::-1])
    endo = polygon2mask(shape, np.asarray(endo_px)[:, ::-1])
    return epi & ~endo


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two masks (1 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def expert_contours(anatomy: SliceAnatomy, rng: np.random.Generator, *, n_experts: int = 3) -> list[ReaderContour]:
    """Contours of ``n_experts`` experts: smooth random perturbations of the truth borders.

    Raises
    ------
    ReaderError
        If ``n_experts`` is not 1-20.
    """
    if not 1 <= n_experts <= 20:
        raise ReaderError(f"n_experts must be 1-20, got {n_experts}")
    polar = _Polar.of(anatomy)
    sigma_mm = EXPERT_VARIABILITY_FRACTION * polar.mean_wall_mm
    readers = []
    for index in range(n_experts):
        endo_delta, endo_offset = _smooth_perturbation(rng, polar.theta, sigma_mm)
        epi_delta, epi_offset = _smooth_perturbation(rng, polar.theta, sigma_mm)
        readers.append(
            polar.reader(
                f"expert{index + 1}",
                "expert",
                polar.endo_mm + endo_delta,
                polar.epi_mm + epi_delta,
                None,
                {"sigma_mm": sigma_mm, "endo_offset_mm": endo_offset, "epi_offset_mm": epi_offset},
            )
        )
    return readers


def trainee_contours(
    anatomy: SliceAnatomy, rng: np.random.Generator, *, n_trainees: int, skill: float
) -> list[ReaderContour]:
    """Contours of ``n_trainees`` trainees of the given ``skill`` (0 novice .. 1 expert level).

    Each trainee gets one :class:`ErrorMode`; GOOD becomes more likely and the errors smaller as skill rises. The
    mode and the parameters that drove it are recorded on the contour.

    Raises
    ------
    ReaderError
        If ``n_trainees`` is not 1-100 or ``skill`` is outside [0, 1].
    """
    if not 1 <= n_trainees <= 100:
        raise ReaderError(f"n_trainees must be 1-100, got {n_trainees}")
    if not 0.0 <= skill <= 1.0:
        raise ReaderError(f"skill must be in [0, 1], got {skill}")
    polar = _Polar.of(anatomy)
    errors = [m for m in ErrorMode if m is not ErrorMode.GOOD]
    readers = []
    for index in range(n_trainees):
        mode = ErrorMode.GOOD if rng.random() < 0.15 + 0.7 * skill else errors[int(rng.integers(len(errors)))]
        readers.append(_trainee(polar, rng, f"trainee{index + 1}", mode, skill))
    return readers


def trainee_with_mode(
    anatomy: SliceAnatomy, rng: np.random.Generator, mode: ErrorMode, *, skill: float = 0.3, name: str = "trainee1"
) -> ReaderContour:
    """One trainee contour with a chosen error mode (for building balanced data sets and for tests)."""
    if not 0.0 <= skill <= 1.0:
        raise ReaderError(f"skill must be in [0, 1], got {skill}")
    return _trainee(_Polar.of(anatomy), rng, name, ErrorMode(mode), skill)


class _Polar:
    """Truth borders as radius (mm) against display angle around the LV centre."""

    def __init__(self, anatomy: SliceAnatomy, theta: np.ndarray, endo_mm: np.ndarray, epi_mm: np.ndarray) -> None:
        self.anatomy = anatomy
        self.theta = theta
        self.endo_mm = endo_mm
        self.epi_mm = epi_mm
        self.mean_wall_mm = float(np.mean(epi_mm - endo_mm))

    @classmethod
    def of(cls, anatomy: SliceAnatomy) -> _Polar:
        theta, endo = _to_polar(anatomy, anatomy.endo_contour_px)
        # Both truth contours are sampled at the same angles; resample the epicardium onto the endocardial angles.
        theta_epi, epi = _to_polar(anatomy, anatomy.epi_contour_px)
        order = np.argsort(theta_epi)
        epi = np.interp(theta, theta_epi[order], epi[order], period=2 * np.pi)
        return cls(anatomy, theta, endo, epi)

    def reader(
        self,
        name: str,
        role: str,
        endo_mm: np.ndarray,
        epi_mm: np.ndarray,
        mode: ErrorMode | None,
        parameters: dict[str, float],
    ) -> ReaderContour:
        endo_mm = np.maximum(endo_mm, 1.0)
        epi_mm = np.maximum(epi_mm, endo_mm + 0.05)
        endo = _to_px(self.anatomy, self.theta, endo_mm)
        epi = _to_px(self.anatomy, self.theta, epi_mm)
        return ReaderContour(
            reader=name,
            role=role,
            endo_contour_px=endo,
            epi_contour_px=epi,
            myocardium_mask=myocardium_mask(self.anatomy.label_map.shape, endo, epi),
            error_mode=mode.value if mode is not None else None,
            parameters={k: float(v) for k, v in parameters.items()},
        )

    def ray_run_mm(self, radius_mm: np.ndarray, tissue: Tissue, outward: bool, max_mm: float) -> np.ndarray:
        """Length (mm) of ``tissue`` met along each ray from ``radius_mm`` outward (or inward), up to max_mm."""
        spacing = min(self.anatomy.geometry.pixel_spacing_mm)
        steps = np.arange(0.5 * spacing, max_mm, 0.5 * spacing)
        direction = 1.0 if outward else -1.0
        radii = radius_mm[np.newaxis, :] + direction * steps[:, np.newaxis]
        points = _to_px(self.anatomy, np.broadcast_to(self.theta, radii.shape).ravel(), radii.ravel())
        labels = ndimage.map_coordinates(
            self.anatomy.label_map, [points[:, 1], points[:, 0]], order=0, mode="nearest"
        ).reshape(radii.shape)
        hits = labels == tissue
        # Distance to the far edge of the first run of ``tissue`` met within the first few mm.
        last = np.where(hits.any(axis=0), hits.shape[0] - 1 - np.argmax(hits[::-1], axis=0), -1)
        return np.where(last >= 0, steps[np.clip(last, 0, None)], 0.0)


def _trainee(polar: _Polar, rng: np.random.Generator, name: str, mode: ErrorMode, skill: float) -> ReaderContour:
    severity = 1.0 - 0.7 * skill  # 1 for a novice, 0.3 at expert level
    sigma_mm = EXPERT_VARIABILITY_FRACTION * polar.mean_wall_mm * (2.0 - skill)
    endo_delta, _ = _smooth_perturbation(rng, polar.theta, sigma_mm)
    epi_delta, _ = _smooth_perturbation(rng, polar.theta, sigma_mm)
    endo = polar.endo_mm + endo_delta
    epi = polar.epi_mm + epi_delta
    params: dict[str, float] = {"sigma_mm": sigma_mm, "skill": skill, "severity": severity}
    theta = polar.theta

    if mode is ErrorMode.PAPILLARY:
        inner = _papillary_inner_radius(polar)
        if inner is None:
            mode = ErrorMode.BLOOD_POOL  # no papillary muscles in this slice (apex)
        else:
            covered = np.isfinite(inner)
            params["papillary_sector_deg"] = float(covered.mean() * 360.0)
            endo = np.where(covered, np.minimum(endo, np.where(covered, inner, np.inf)), endo)

    if mode is ErrorMode.SHIFTED:
        magnitude = 1.5 + 4.0 * severity * rng.uniform(0.6, 1.0)
        direction = rng.uniform(0.0, 2 * np.pi)
        shift = magnitude * np.array([np.cos(direction), -np.sin(direction)])  # (u, v) mm
        endo = _shift_polar(theta, endo, shift)
        epi = _shift_polar(theta, epi, shift)
        params |= {"shift_x_mm": shift[0], "shift_y_mm": shift[1], "shift_mm": magnitude}
    elif mode is ErrorMode.EPICARDIAL_FAT:
        fat = polar.ray_run_mm(polar.epi_mm, Tissue.EPICARDIAL_FAT, outward=True, max_mm=12.0)
        centre, width = rng.uniform(0.0, 2 * np.pi), np.radians(rng.uniform(90.0, 200.0))
        bulge = (1.0 + 2.5 * severity) * _window(theta, centre, width)
        added = fat + bulge
        epi = epi + added
        params |= {"mean_added_mm": float(added.mean()), "sector_width_deg": float(np.degrees(width))}
    elif mode is ErrorMode.BLOOD_POOL:
        centre, width = rng.uniform(0.0, 2 * np.pi), np.radians(rng.uniform(120.0, 300.0))
        depth = 1.5 + 3.5 * severity * rng.uniform(0.6, 1.0)
        endo = endo - depth * _window(theta, centre, width)
        params |= {"depth_mm": depth, "sector_width_deg": float(np.degrees(width))}
    elif mode is ErrorMode.TOO_SMOOTH:
        kept = int(rng.integers(1, 3))
        endo, epi = _low_pass(endo, kept), _low_pass(epi, kept)
        params |= {"harmonics_kept": kept}
    elif mode is ErrorMode.JAGGED:
        amplitude = 0.5 + 1.5 * severity * rng.uniform(0.6, 1.0)
        endo = endo + _wobble(rng, theta, amplitude)
        epi = epi + _wobble(rng, theta, amplitude)
        params |= {"amplitude_mm": amplitude}
    elif mode is ErrorMode.PART_MISSED:
        centre, width = rng.uniform(0.0, 2 * np.pi), np.radians(rng.uniform(40.0, 120.0))
        fraction = rng.uniform(0.7, 1.0)
        window = _window(theta, centre, width)
        epi = epi - fraction * window * (epi - endo)
        params |= {
            "sector_start_deg": float(np.degrees(centre - width / 2.0) % 360.0),
            "sector_width_deg": float(np.degrees(width)),
            "missed_fraction": fraction,
        }
    return polar.reader(name, "trainee", endo, epi, mode, params)


def _papillary_inner_radius(polar: _Polar) -> np.ndarray | None:
    """Per contour angle, the radius (mm) just inside the papillary muscle, or inf where there is none."""
    anatomy = polar.anatomy
    ys, xs = np.nonzero(anatomy.label_map == Tissue.PAPILLARY)
    if xs.size == 0:
        return None
    theta, radius = _to_polar(anatomy, np.stack([xs, ys], axis=1).astype(np.float64))
    spacing = max(anatomy.geometry.pixel_spacing_mm)
    n = polar.theta.size
    bins = np.round(np.mod(theta, 2 * np.pi) / (2 * np.pi) * n).astype(np.int64) % n
    inner = np.full(n, np.inf)
    np.minimum.at(inner, bins, radius - 0.7 * spacing)
    # Spread to neighbouring angles so the drawn border goes round the muscle rather than through it.
    half = max(1, int(np.ceil(np.degrees(spacing / max(float(np.median(radius)), 1.0)) / (360.0 / n))) + 1)
    return ndimage.minimum_filter1d(inner, size=2 * half + 1, mode="wrap")


def _smooth_perturbation(rng: np.random.Generator, theta: np.ndarray, sigma_mm: float) -> tuple[np.ndarray, float]:
    """Random offset plus Fourier orders 1-3, of total standard deviation about ``sigma_mm``."""
    offset = float(rng.normal(0.0, sigma_mm * 0.5))
    coefficients = rng.normal(
        0.0, sigma_mm * np.sqrt(2.0 * 0.75 / _PERTURBATION_ORDERS.size), _PERTURBATION_ORDERS.size
    )
    phases = rng.uniform(0.0, 2 * np.pi, _PERTURBATION_ORDERS.size)
    delta = offset + (coefficients[:, None] * np.cos(_PERTURBATION_ORDERS[:, None] * theta + phases[:, None])).sum(0)
    return delta, offset


def _window(theta: np.ndarray, centre: float, width: float) -> np.ndarray:
    """1 inside a sector, raised-cosine tapered over its outer quarters, 0 outside."""
    distance = np.abs(np.mod(theta - centre + np.pi, 2 * np.pi) - np.pi)
    ramp = np.clip((width / 2.0 - distance) / (width / 4.0), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * ramp)


def _low_pass(radius: np.ndarray, kept: int) -> np.ndarray:
    spectrum = np.fft.rfft(radius)
    spectrum[kept + 1 :] = 0.0
    return np.fft.irfft(spectrum, n=radius.size)


def _wobble(rng: np.random.Generator, theta: np.ndarray, amplitude_mm: float) -> np.ndarray:
    orders = np.arange(10, 31)
    coefficients = rng.normal(0.0, amplitude_mm * np.sqrt(2.0 / orders.size), orders.size)
    phases = rng.uniform(0.0, 2 * np.pi, orders.size)
    return (coefficients[:, None] * np.cos(orders[:, None] * theta + phases[:, None])).sum(0)


def _shift_polar(theta: np.ndarray, radius: np.ndarray, shift_uv_mm: np.ndarray) -> np.ndarray:
    """Radius function of the border translated by ``shift_uv_mm``, resampled at the same angles."""
    u = radius * np.cos(theta) + shift_uv_mm[0]
    v = -radius * np.sin(theta) + shift_uv_mm[1]
    new_theta = np.arctan2(-v, u)
    order = np.argsort(new_theta)
    return np.interp(theta, new_theta[order], np.hypot(u, v)[order], period=2 * np.pi)


def _to_polar(anatomy: SliceAnatomy, points_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    u = (points_px[:, 0] - cx) * column_spacing
    v = (points_px[:, 1] - cy) * row_spacing
    return np.arctan2(-v, u), np.hypot(u, v)


def _to_px(anatomy: SliceAnatomy, theta: np.ndarray, radius_mm: np.ndarray) -> np.ndarray:
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    x = cx + radius_mm * np.cos(theta) / column_spacing
    y = cy - radius_mm * np.sin(theta) / row_spacing
    return np.stack([x, y], axis=1)
