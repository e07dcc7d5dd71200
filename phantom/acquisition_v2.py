"""Phantom v2 image formation: partial-volume signal, transmit field, motion, k-space sampling and Rician noise.

Per image, the noise-free complex image is formed on the display grid from the v2 slice
(:class:`phantom.anatomy_v2.RealisticSlice`): every structure contributes its area fraction times its proton
density times its signal, so a pixel that mixes blood and myocardium holds the *sum* of their signals (which a fit
then reads as neither). The signal comes from the Bloch lookup table of :mod:`phantom.acquisition`, simulated at
several transmit scales and interpolated per pixel, because the transmit field varies over the slice (about
+-20 % at 3 T). Then:

- **motion**: the frame's tissue displacement (:mod:`phantom.motion`) moves the noise-free image; frames that
  breathing leaves still keep a residual misregistration, as after the scanner's inline motion correction (0.2-0.8
  mm translation SD per series, up to about 1 deg, 0.2-1 mm smooth deformation);
- **receive field**: the coil sensitivity and background phase (:func:`phantom.acquisition.make_coil_field`) and a
  small shot-to-shot phase per frame;
- **k-space**: the image is transformed, only the acquired part of k-space is kept (the acquired matrix,
  fewer lines in the phase-encoding direction), optionally weighted by the vendor's raw-data filter (mild Hann or
  Fermi), complex Gaussian noise is added to the acquired samples only, and the rest is zero-filled to the display
  matrix: the scanner's interpolation, with its blur, ringing and spatially correlated noise;
- **magnitude**: Rician (Rayleigh in air).

Magnetisation transfer, which lowers in-vivo MOLLI and ShMOLLI readings of tissue with a macromolecular pool, is
not simulated by the Bloch model; at 3 T, where the simulated plain fit would read myocardium near 1360 ms against
about 1200-1250 ms in vivo, the inversion-recovery images of myocardium, skeletal muscle, liver and spleen are formed
with their T1 scaled by :data:`MT_APPARENT_T1_FACTOR` (a phenomenological calibration; the truth keeps the true T1).

SNR keeps v1's definition: the mean noise-free magnitude of the true myocardium in the reference image divided by
the noise standard deviation per channel in the final (interpolated) image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.shmolli import fit_t1_shmolli
from inference.t1_fit import fit_t1_molli
from inference.t2_fit import fit_t2_prep
from phantom.acquisition import RECEIVER_GAIN, AcquisitionError, signal_lookup_table
from phantom.anatomy_v2 import RealisticSlice, Structure, structure_values
from phantom.model import AcquiredSeries, FieldStrength, FrameMotion, SequenceKind
from phantom.motion import STILL, displacement_field, motion_labels
from phantom.schemes import Scheme

LOGGER = logging.getLogger(__name__)

_T1_GRID_MS = np.geomspace(80.0, 4500.0, 56)  # as phantom.acquisition's lookup table
_T2_GRID_MS = np.geomspace(8.0, 1000.0, 28)
_B1_NODES = 4
#: Apparent T1 scale of tissue with magnetisation transfer in inversion-recovery readouts, per field (see above).
MT_APPARENT_T1_FACTOR = {FieldStrength.T1_5: 1.0, FieldStrength.T3: 0.92}
_MT_STRUCTURES = frozenset({Structure.MYOCARDIUM, Structure.PAPILLARY, Structure.RV_WALL, Structure.RV_TRABECULA,
                            Structure.CHEST_MUSCLE, Structure.LIVER, Structure.SPLEEN})
RESIDUAL_TRANSLATION_SD_MM = (0.2, 0.8)


def sample_residual_misregistration(rng: np.random.Generator,
                                    frames: Sequence[FrameMotion]) -> tuple[FrameMotion, ...]:
    """Give every still frame a small residual displacement, as left by inline motion correction.

    Frames displaced by breathing keep their motion. One translation SD per series (0.2-0.8 mm), rotation SD
    0.4 deg, and a smooth deformation of 0.2-1 mm (wavelength 60-140 mm).
    """
    sd = float(rng.uniform(*RESIDUAL_TRANSLATION_SD_MM))
    out = []
    for frame in frames:
        if not frame.is_still:
            out.append(frame)
            continue
        out.append(FrameMotion(
            translation_mm=(round(float(rng.normal(0.0, sd)), 4), round(float(rng.normal(0.0, sd)), 4)),
            rotation_deg=round(float(rng.normal(0.0, 0.4)), 4),
            deformation_mm=round(float(rng.uniform(0.2, 1.0)), 4),
            deformation_phase_rad=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
            deformation_wavelength_mm=float(rng.uniform(60.0, 140.0)),
        ))
    return tuple(out)


def acquire_v2(
    realistic: RealisticSlice,
    scheme: Scheme,
    rng: np.random.Generator,
    *,
    snr: float,
    motion: Sequence[FrameMotion] | None = None,
    b1_scale: float = 1.0,
) -> AcquiredSeries:
    """Form the images of one v2 slice acquired with ``scheme`` (see the module docstring).

    Parameters
    ----------
    realistic
        The v2 slice.
    scheme
        Timing of the sequence.
    rng
        Draws the residual misregistration, the per-frame phase offsets and the noise.
    snr
        Myocardial SNR of the reference image, 1-1000.
    motion
        Breathing motion, one :class:`FrameMotion` per image (None: every frame still before the residual
        misregistration is added).
    b1_scale
        Transmit scale of the series at the image centre; the slice's transmit field varies around it.

    Raises
    ------
    AcquisitionError
        If ``snr`` is out of range or ``motion`` does not have one entry per image.
    """
    if not 1.0 <= snr <= 1000.0:
        raise AcquisitionError(f"snr must be in [1, 1000], got {snr}")
    n_images = scheme.n_images
    breathing = tuple(motion) if motion is not None else (STILL,) * n_images
    if len(breathing) != n_images:
        raise AcquisitionError(f"motion must have one frame per image ({n_images}), got {len(breathing)}")
    frames = sample_residual_misregistration(rng, breathing)
    anatomy = realistic.anatomy
    clean = noise_free_signal(realistic, scheme, b1_scale)
    for index, frame in enumerate(frames):
        if not frame.is_still:
            clean[index] = _displaced(clean[index], anatomy, frame)

    if scheme.is_inversion_recovery:
        reference = int(np.argmax(scheme.inversion_times_ms))  # type: ignore[arg-type]
    else:
        reference = int(np.argmin(scheme.t2_prep_ms))  # type: ignore[arg-type]
    coil = realistic.coil
    frame_phase = rng.normal(0.0, 0.1, n_images)
    receive = (RECEIVER_GAIN * coil.sensitivity * np.exp(1j * coil.phase_rad)).astype(np.complex64)
    complex_images = clean.astype(np.float32) * receive[np.newaxis]
    complex_images *= np.exp(1j * frame_phase).astype(np.complex64)[:, np.newaxis, np.newaxis]

    sampling = KSpaceSampling.of(realistic)
    kspace = sampling.acquire(complex_images)
    myocardium = anatomy.myocardium_mask
    if not myocardium.any():
        raise AcquisitionError("the slice has no myocardium to refer the SNR to")
    noise_free = sampling.reconstruct(kspace[reference])
    reference_level = float(np.abs(noise_free[myocardium]).mean())
    noise_sigma = reference_level / snr
    noise = (rng.standard_normal(kspace.shape, dtype=np.float32)
             + 1j * rng.standard_normal(kspace.shape, dtype=np.float32)).astype(np.complex64)
    kspace += noise * np.float32(noise_sigma * sampling.noise_scale) * sampling.window
    images = sampling.reconstruct(kspace)

    phase_rad = np.angle(images).astype(np.float32)
    phase_rad[phase_rad >= np.pi] = -np.pi
    return AcquiredSeries(
        sequence=scheme.kind,
        magnitude=np.abs(images).astype(np.float32),
        phase_rad=phase_rad,
        inversion_times_ms=scheme.inversion_times_ms,
        t2_prep_ms=scheme.t2_prep_ms,
        trigger_times_ms=np.full(n_images, scheme.trigger_delay_ms),
        acquisition_times_s=scheme.centre_times_ms / 1000.0,
        rr_ms=scheme.rr_ms,
        flip_angle_deg=scheme.readout.flip_angle_deg,
        echo_time_ms=scheme.readout.te_ms,
        repetition_time_ms=scheme.readout.tr_ms,
        frame_motion=frames,
        motion_labels=motion_labels(anatomy, frames),
        noise_sigma=float(noise_sigma),
    )


def noise_free_signal(realistic: RealisticSlice, scheme: Scheme, b1_scale: float = 1.0) -> np.ndarray:
    """(n_images, rows, columns) real signal (proton density and partial volume in, no coil): the sum over
    structures of fraction x proton density x Bloch signal at the pixel's T1, T2 and transmit field."""
    b1 = np.clip(b1_scale * realistic.b1_relative, 0.3, 1.5)
    nodes = np.linspace(float(b1.min()), float(b1.max()) + 1e-6, _B1_NODES)
    tables = np.stack([signal_lookup_table(scheme, b1_scale=float(node)) for node in nodes])  # (B, n, T1, T2)
    n_images = scheme.n_images
    rows, columns = b1.shape
    clean = np.zeros((n_images, rows * columns), dtype=np.float64)
    fractions = realistic.fractions.reshape(len(Structure), -1)
    for structure in Structure:
        if realistic.properties[structure].proton_density <= 0:
            continue
        where = fractions[structure] > 0
        if not where.any():
            continue
        flat_where = where.reshape(rows, columns)
        t1, t2, pd = structure_values(structure, realistic.properties, realistic.t1_factor, realistic.t2_factor,
                                      realistic.t1_texture, realistic.pd_texture, realistic.pd_fine_texture,
                                      flat_where)
        if scheme.is_inversion_recovery and structure in _MT_STRUCTURES:
            t1 = t1 * MT_APPARENT_T1_FACTOR[realistic.field_strength]
        signal = _interpolate(tables, nodes, b1[flat_where], t1, t2)
        clean[:, where] += signal * (fractions[structure, where] * pd)[np.newaxis]
    return clean.reshape(n_images, rows, columns)


def _interpolate(tables: np.ndarray, nodes: np.ndarray, b1: np.ndarray, t1_ms: np.ndarray,
                 t2_ms: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of the lookup tables in (transmit scale, log T1, log T2); (n_images, n_values)."""
    n_b1, n_images, n_t1, n_t2 = tables.shape

    def position(values: np.ndarray, grid: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
        if log:
            step = np.log(grid[1] / grid[0])
            index = (np.log(np.clip(values, grid[0], grid[-1])) - np.log(grid[0])) / step
        else:
            step = grid[1] - grid[0]
            index = (np.clip(values, grid[0], grid[-1]) - grid[0]) / step
        lower = np.clip(np.floor(index).astype(np.int64), 0, grid.size - 2)
        return lower, np.clip(index - lower, 0.0, 1.0)

    i, wi = position(np.asarray(t1_ms, dtype=np.float64), _T1_GRID_MS, True)
    j, wj = position(np.asarray(t2_ms, dtype=np.float64), _T2_GRID_MS, True)
    k, wk = position(np.asarray(b1, dtype=np.float64), nodes, False)
    # One flat table (n_images, B * T1 * T2): each corner is one gather of columns.
    flat = np.moveaxis(tables, 1, 0).reshape(n_images, n_b1 * n_t1 * n_t2)
    base = k * (n_t1 * n_t2) + i * n_t2 + j
    out = np.zeros((n_images, base.size))
    for dk, weight_k in ((0, 1.0 - wk), (n_t1 * n_t2, wk)):
        for offset, weight in ((0, (1 - wi) * (1 - wj)), (n_t2, wi * (1 - wj)), (1, (1 - wi) * wj),
                               (n_t2 + 1, wi * wj)):
            out += flat[:, base + dk + offset] * (weight * weight_k)[np.newaxis]
    return out


def _displaced(image: np.ndarray, anatomy: object, frame: FrameMotion) -> np.ndarray:
    """The noise-free image with its tissue moved by ``frame`` (sampled at p - d(p), bilinear)."""
    geometry = anatomy.geometry  # type: ignore[attr-defined]
    dx, dy = displacement_field(frame, geometry, centre_px=anatomy.lv_centre_px)  # type: ignore[attr-defined]
    y, x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    return ndimage.map_coordinates(image, np.stack([y - dy, x - dx]), order=1, mode="nearest")


class KSpaceSampling:
    """The acquired window of k-space within the display matrix, its filter and the noise scale."""

    def __init__(self, display: tuple[int, int], acquired: tuple[int, int], kspace_filter: str) -> None:
        self.display = display
        self.acquired = acquired
        rows, columns = display
        acquired_rows, acquired_columns = acquired
        ky = np.fft.fftfreq(rows) * rows  # integer frequencies in numpy's FFT order
        kx = np.fft.fftfreq(columns) * columns
        in_rows = np.abs(ky) <= (acquired_rows - 1) / 2.0 + 1e-9
        in_columns = np.abs(kx) <= (acquired_columns - 1) / 2.0 + 1e-9
        window = (in_rows[:, None] & in_columns[None, :]).astype(np.float32)
        if kspace_filter != "none":
            ry = np.abs(ky) / max(acquired_rows / 2.0, 1.0)
            rx = np.abs(kx) / max(acquired_columns / 2.0, 1.0)
            window *= (_filter(ry, kspace_filter)[:, None] * _filter(rx, kspace_filter)[None, :]).astype(np.float32)
        self.window = window
        # Image-domain noise SD per channel = sigma_k * sqrt(sum(window^2)) / (rows * columns) with numpy's ifft2.
        self.noise_scale = float(rows * columns / np.sqrt(np.sum(window**2)))

    @classmethod
    def of(cls, realistic: RealisticSlice) -> KSpaceSampling:
        imaging = realistic.imaging
        return cls(imaging.display_matrix, imaging.acquired_matrix, imaging.kspace_filter)

    def acquire(self, images: np.ndarray) -> np.ndarray:
        """k-space of the images, zero outside the acquired window, the raw-data filter applied."""
        return (np.fft.fft2(images, axes=(-2, -1)) * self.window).astype(np.complex64)

    def reconstruct(self, kspace: np.ndarray) -> np.ndarray:
        """Complex images from the (zero-filled) k-space."""
        return np.fft.ifft2(kspace, axes=(-2, -1)).astype(np.complex64)


def _filter(radius: np.ndarray, kind: str) -> np.ndarray:
    """Raw-data filter along one axis, ``radius`` 1 at the edge of the acquired k-space."""
    if kind == "hann":  # a mild Hann taper over the outer 40 % of k-space
        return np.where(radius < 0.6, 1.0, 0.5 + 0.5 * np.cos(np.pi * np.clip((radius - 0.6) / 0.4, 0.0, 1.0)))
    return 1.0 / (1.0 + np.exp((radius - 0.9) / 0.04))  # Fermi, edge at 90 % of the acquired extent


T1_DISPLAY_MAX_MS = 4000.0
T2_DISPLAY_MAX_MS = 300.0


@dataclass(frozen=True)
class ScannerMap:
    """A v2 scanner's map: a value in every pixel, as real MOLLI/ShMOLLI/T2 maps show even in air and lung."""

    map_ms: np.ndarray  # (rows, columns): the fit where valid, else the clipped raw fit or 0 (salt and pepper)
    r2: np.ndarray  # (rows, columns) 0..1
    valid: np.ndarray  # (rows, columns) bool: where the fit itself was valid


def scanner_map(magnitude: np.ndarray, times_ms: np.ndarray, kind: SequenceKind, *, rr_ms: float,
                inversion_index: np.ndarray | None = None, region: np.ndarray | None = None) -> ScannerMap:
    """The scanner's map of a v2 series: the plain fit of every pixel, background included.

    Real scanners fit every pixel, so where the images hold only noise (air, lung) the map is noise over a wide
    range: the fit's value where it is valid, the raw T1 = T1* (B/A - 1) clipped to 0-4000 ms where it is not
    (0 where even that is undefined); T2 maps show 300 ms where the decay is too slow or rising, 0 where undefined.

    ``region`` (bool, the images' shape) limits the fit to those pixels (0 elsewhere), e.g. a crop around the heart
    for training, since fitting every pixel costs about 0.5 s for a 256 x 256 MOLLI series.
    """
    if region is not None:
        selected = np.asarray(region, dtype=bool)
        inner = scanner_map(np.asarray(magnitude)[:, selected], times_ms, kind, rr_ms=rr_ms,
                            inversion_index=inversion_index)
        full = ScannerMap(np.zeros(selected.shape), np.zeros(selected.shape), np.zeros(selected.shape, dtype=bool))
        full.map_ms[selected], full.r2[selected], full.valid[selected] = inner.map_ms, inner.r2, inner.valid
        return full
    times = np.asarray(times_ms, dtype=np.float64)
    if kind is SequenceKind.T2PREP:
        t2 = fit_t2_prep(magnitude, times, background_fraction=0.0)
        filler = np.where(np.isfinite(t2.m0) & (t2.m0 > 0), T2_DISPLAY_MAX_MS, 0.0)
        values = np.where(t2.valid, t2.t2_ms, filler)
        return ScannerMap(np.clip(values, 0.0, T2_DISPLAY_MAX_MS), t2.r2, t2.valid)
    if kind is SequenceKind.SHMOLLI:
        t1 = fit_t1_shmolli(magnitude, times, rr_ms=rr_ms, inversion_index=inversion_index, background_fraction=0.0)
    else:
        t1 = fit_t1_molli(magnitude, times, background_fraction=0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        raw = t1.t1_star_ms * (t1.b / t1.a - 1.0)
    raw = np.where(np.isfinite(raw), np.clip(raw, 0.0, T1_DISPLAY_MAX_MS), 0.0)
    values = np.where(t1.valid, t1.t1_ms, raw)
    return ScannerMap(np.clip(values, 0.0, T1_DISPLAY_MAX_MS), t1.r2, t1.valid)
