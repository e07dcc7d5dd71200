"""Image formation: the anatomy seen through a mapping scheme, with coil field, phase, motion and Rician noise.

Per pixel, the signal of each image is ``gain * PD * coil * S(T1, T2) * exp(i * phase)`` where ``S`` comes from a
lookup table simulated by :mod:`phantom.bloch` on a logarithmic (T1, T2) grid and interpolated bilinearly in
log(T1), log(T2) (a Bloch simulation per pixel would be far too slow). Displaced frames sample the property maps at
the displaced positions before the signal is formed, so the noise is never warped. Complex Gaussian noise of
standard deviation ``noise_sigma`` per channel is added and the magnitude taken, which gives Rician magnitude noise.

SNR: the mean noise-free magnitude of the true myocardium in the reference image divided by ``noise_sigma``. The
reference image is the one with the longest TI (IR schemes) or the one without T2 preparation (T2-prep).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from phantom.bloch import simulate_signal
from phantom.model import AcquiredSeries, FrameMotion, SliceAnatomy
from phantom.motion import STILL, displacement_field, motion_labels
from phantom.schemes import Scheme

LOGGER = logging.getLogger(__name__)

RECEIVER_GAIN = 1000.0  # magnitude of a pixel of proton density 1 with full signal and unit coil sensitivity
_T1_GRID_MS = np.geomspace(80.0, 4500.0, 56)
_T2_GRID_MS = np.geomspace(8.0, 1000.0, 28)


class AcquisitionError(ValueError):
    """The acquisition cannot be formed as requested (bad SNR, motion of the wrong length)."""


@dataclass(frozen=True)
class CoilField:
    """Smooth receive sensitivity (real, positive) and background phase (radians) of one slice."""

    sensitivity: np.ndarray  # (rows, columns)
    phase_rad: np.ndarray  # (rows, columns)


def make_coil_field(anatomy: SliceAnatomy, rng: np.random.Generator) -> CoilField:
    """Draw a smooth coil sensitivity (anterior and posterior array elements) and a smooth background phase.

    The sensitivity is 1 at the LV centre and varies by a factor of about 2-3 across the body.
    """
    rows, columns = anatomy.label_map.shape
    row_spacing, column_spacing = anatomy.geometry.pixel_spacing_mm
    cx, cy = anatomy.lv_centre_px
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    u, v = (x - cx) * column_spacing, (y - cy) * row_spacing
    sensitivity = np.zeros((rows, columns))
    for side in (-1.0, 1.0):  # anterior (top) and posterior (bottom) coil arrays
        for _ in range(int(rng.integers(2, 4))):
            element_u = rng.uniform(-120.0, 120.0)
            element_v = side * rng.uniform(110.0, 160.0)
            width = rng.uniform(90.0, 150.0)
            weight = rng.uniform(0.6, 1.0) * (1.2 if side < 0 else 1.0)
            sensitivity += weight * np.exp(-((u - element_u) ** 2 + (v - element_v) ** 2) / (2.0 * width**2))
    sensitivity /= sensitivity[int(round(cy)), int(round(cx))]
    half_u, half_v = columns * column_spacing / 2.0, rows * row_spacing / 2.0
    un, vn = u / half_u, v / half_v
    coefficients = rng.normal(0.0, [1.0, 0.8, 0.8, 0.4, 0.4, 0.4])
    phase = (
        coefficients[0]
        + coefficients[1] * un
        + coefficients[2] * vn
        + coefficients[3] * un * vn
        + coefficients[4] * un**2
        + coefficients[5] * vn**2
    )
    return CoilField(sensitivity=sensitivity, phase_rad=phase)


def signal_lookup_table(scheme: Scheme, *, b1_scale: float = 1.0) -> np.ndarray:
    """Simulated signal of every image on the (T1, T2) grid, (n_images, n_t1, n_t2) float64."""
    t1, t2 = np.meshgrid(_T1_GRID_MS, _T2_GRID_MS, indexing="ij")
    signal = simulate_signal(scheme, t1, t2, b1_scale=b1_scale).real
    return signal.reshape(scheme.n_images, _T1_GRID_MS.size, _T2_GRID_MS.size)


def interpolate_signal(table: np.ndarray, t1_ms: np.ndarray, t2_ms: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of the lookup table in log(T1), log(T2); (n_images, n_values)."""
    n_images, n_t1, n_t2 = table.shape
    flat = table.reshape(n_images, n_t1 * n_t2)

    def position(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = np.log(grid[1] / grid[0])
        index = (np.log(np.clip(values, grid[0], grid[-1])) - np.log(grid[0])) / step
        lower = np.clip(np.floor(index).astype(np.int64), 0, grid.size - 2)
        return lower, np.clip(index - lower, 0.0, 1.0)

    i, wi = position(np.asarray(t1_ms, dtype=np.float64), _T1_GRID_MS)
    j, wj = position(np.asarray(t2_ms, dtype=np.float64), _T2_GRID_MS)
    base = i * n_t2 + j
    return (
        flat[:, base] * ((1 - wi) * (1 - wj))
        + flat[:, base + n_t2] * (wi * (1 - wj))
        + flat[:, base + 1] * ((1 - wi) * wj)
        + flat[:, base + n_t2 + 1] * (wi * wj)
    )


def acquire(
    anatomy: SliceAnatomy,
    scheme: Scheme,
    rng: np.random.Generator,
    *,
    snr: float,
    motion: Sequence[FrameMotion] | None = None,
    b1_scale: float = 1.0,
    coil: CoilField | None = None,
    snr_reference_mask: np.ndarray | None = None,
) -> AcquiredSeries:
    """Form the images of one slice acquired with ``scheme``.

    Parameters
    ----------
    anatomy
        Ground truth of the slice.
    scheme
        Timing of the sequence.
    rng
        Draws the coil field (when not given), the per-frame phase offsets and the noise.
    snr
        Myocardial SNR of the reference image (see the module docstring), 1-1000.
    motion
        One :class:`FrameMotion` per image, or None for a still series.
    b1_scale
        Relative transmit field of the slice (scales the readout flip angle).
    coil
        Coil field shared by the series of one slice; drawn when not given.
    snr_reference_mask
        (rows, columns) bool: the pixels whose mean noise-free signal ``snr`` refers to; the true myocardium when
        None (a phantom without a heart names its own, e.g. the vials).

    Raises
    ------
    AcquisitionError
        If ``snr`` is out of range, ``motion`` does not have one entry per image, or the SNR reference is empty.
    """
    if not 1.0 <= snr <= 1000.0:
        raise AcquisitionError(f"snr must be in [1, 1000], got {snr}")
    n_images = scheme.n_images
    frames = tuple(motion) if motion is not None else (STILL,) * n_images
    if len(frames) != n_images:
        raise AcquisitionError(f"motion must have one frame per image ({n_images}), got {len(frames)}")
    coil = coil if coil is not None else make_coil_field(anatomy, rng)
    table = signal_lookup_table(scheme, b1_scale=b1_scale)

    # Still frames: one interpolation for all images, restricted to pixels with tissue.
    shape = anatomy.label_map.shape
    body = anatomy.proton_density > 0
    clean = np.zeros((n_images, *shape))
    clean[:, body] = interpolate_signal(table, anatomy.t1_ms[body], anatomy.t2_ms[body])
    clean *= anatomy.proton_density[np.newaxis]
    for index, frame in enumerate(frames):
        if frame.is_still:
            continue
        clean[index] = _displaced_signal(anatomy, table[index : index + 1], frame)

    if scheme.is_inversion_recovery:
        reference = int(np.argmax(scheme.inversion_times_ms))  # type: ignore[arg-type]
    else:
        reference = int(np.argmin(scheme.t2_prep_ms))  # type: ignore[arg-type]
    gain = RECEIVER_GAIN * coil.sensitivity
    myocardium = anatomy.myocardium_mask if snr_reference_mask is None else np.asarray(snr_reference_mask, bool)
    if not myocardium.any():
        raise AcquisitionError("the SNR reference (myocardium or snr_reference_mask) holds no pixel")
    reference_level = float(np.abs(clean[reference][myocardium] * gain[myocardium]).mean())
    noise_sigma = reference_level / snr

    # Background phase of the coil field plus a small shot-to-shot offset per frame:
    # cos/sin(coil + offset) by the angle-sum rule, so no complex exponential over the whole series.
    frame_phase = rng.normal(0.0, 0.1, n_images)[:, np.newaxis, np.newaxis]
    cos_coil, sin_coil = np.cos(coil.phase_rad), np.sin(coil.phase_rad)
    cos_phase = cos_coil * np.cos(frame_phase) - sin_coil * np.sin(frame_phase)
    sin_phase = sin_coil * np.cos(frame_phase) + cos_coil * np.sin(frame_phase)
    amplitude = (clean * gain[np.newaxis]).astype(np.float32)
    real = amplitude * cos_phase.astype(np.float32)
    imaginary = amplitude * sin_phase.astype(np.float32)
    real += rng.standard_normal(real.shape, dtype=np.float32) * np.float32(noise_sigma)
    imaginary += rng.standard_normal(imaginary.shape, dtype=np.float32) * np.float32(noise_sigma)

    phase_rad = np.arctan2(imaginary, real)
    phase_rad[phase_rad >= np.pi] = -np.pi  # keep [-pi, pi)
    return AcquiredSeries(
        sequence=scheme.kind,
        magnitude=np.hypot(real, imaginary),
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


def warp_maps(anatomy: SliceAnatomy, frame: FrameMotion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T1, T2 and proton density maps of the anatomy as a displaced frame shows them."""
    dx, dy = displacement_field(frame, anatomy.geometry, centre_px=anatomy.lv_centre_px)
    y, x = np.mgrid[0 : anatomy.label_map.shape[0], 0 : anatomy.label_map.shape[1]].astype(np.float64)
    # Tissue from p appears at p + d(p); for smooth, small d, the pixel q shows the tissue from q - d(q).
    coordinates = np.stack([y - dy, x - dx])
    pd = ndimage.map_coordinates(anatomy.proton_density, coordinates, order=1, mode="nearest")
    # Relaxation times are mixed with proton-density weights, as in the partial-volume maps.
    weights = anatomy.proton_density + 1e-6
    weight_sum = ndimage.map_coordinates(weights, coordinates, order=1, mode="nearest")
    t1 = ndimage.map_coordinates(weights * anatomy.t1_ms, coordinates, order=1, mode="nearest") / weight_sum
    t2 = ndimage.map_coordinates(weights * anatomy.t2_ms, coordinates, order=1, mode="nearest") / weight_sum
    return t1, t2, pd


def _displaced_signal(anatomy: SliceAnatomy, table: np.ndarray, frame: FrameMotion) -> np.ndarray:
    t1, t2, pd = warp_maps(anatomy, frame)
    signal = np.zeros(t1.shape)
    body = pd > 0
    signal[body] = interpolate_signal(table, t1[body], t2[body])[0]
    return signal * pd
