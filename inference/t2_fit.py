"""T2 fitting of T2-prepared images: S(TE) = M0 exp(-TE / T2).

T2-prepared bSSFP mapping (Giri et al., JCMR 2009;11:56) reads a few images with preparation durations such as
0, 25 and 55 ms. The fit, vectorised over pixels:

1. a log-linear least-squares fit weighted by S^2 (the variance of log S under Gaussian noise is sigma^2 / S^2),
   in closed form;
2. a few Gauss-Newton steps on the exponential itself, which remove the residual bias of the log transform.

Background pixels (see :func:`inference.t1_fit.foreground_mask`) are not fitted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from inference.errors import TimingError
from inference.t1_fit import BACKGROUND_FRACTION, as_image_stack, foreground_mask, r_squared

LOGGER = logging.getLogger(__name__)

_MIN_T2_IMAGES = 2
_GAUSS_NEWTON_STEPS = 4


@dataclass(frozen=True)
class T2FitResult:
    """Per-pixel T2 fit; every array has the images' trailing shape.

    Attributes
    ----------
    t2_ms
        T2 in ms, NaN where the pixel is background or the fit is not valid.
    m0
        Fitted signal without T2 preparation, in image units; NaN in the background.
    r2
        Coefficient of determination of the fit against the images, in [0, 1]; 0 in the background and wherever
        fewer than three images leave no residual to judge (two points always fit exactly: R2 = 1 there).
    valid
        True where the signal decays (0 < T2 <= t2_max_ms) and M0 > 0.
    """

    t2_ms: np.ndarray
    m0: np.ndarray
    r2: np.ndarray
    valid: np.ndarray


def fit_t2_prep(
    magnitude: np.ndarray,
    t2_prep_ms: np.ndarray,
    *,
    t2_max_ms: float = 300.0,
    background_fraction: float = BACKGROUND_FRACTION,
) -> T2FitResult:
    """Fit T2 from T2-prepared magnitude images.

    Parameters
    ----------
    magnitude
        (n, ...) magnitude images in any order.
    t2_prep_ms
        (n,) T2-preparation duration of each image in ms (0 for the image without preparation).
    t2_max_ms
        Longest T2 taken as valid.
    background_fraction
        As for :func:`inference.t1_fit.fit_t1_molli`.

    Returns
    -------
    T2FitResult

    Raises
    ------
    ShapeMismatchError, TimingError, SignalError
        If the images and preparation times do not describe a T2-prepared series.
    """
    stack, te_ms = as_image_stack(magnitude, t2_prep_ms, times_name="t2_prep_ms", min_images=_MIN_T2_IMAGES)
    if np.any(te_ms < 0):
        raise TimingError(f"t2_prep_ms must be non-negative, got {te_ms.tolist()}")
    if np.unique(te_ms).size < 2:
        raise TimingError(f"t2_prep_ms needs at least two distinct durations, got {te_ms.tolist()}")
    if not t2_max_ms > 0:
        raise TimingError(f"t2_max_ms must be positive, got {t2_max_ms}")
    pixel_shape = stack.shape[1:]
    flat = stack.reshape(stack.shape[0], -1)
    foreground = foreground_mask(flat, background_fraction)
    signal = flat[:, foreground]
    te = te_ms[:, None]

    log_signal = np.log(np.maximum(signal, np.finfo(np.float64).tiny))
    weight = signal**2
    intercept, slope = _weighted_line(te, log_signal, weight)
    m0, rate = np.exp(intercept), -slope
    cost = _cost(signal, te, m0, rate)
    for _ in range(_GAUSS_NEWTON_STEPS):
        decay = np.exp(-te * rate)
        residual = signal - m0 * decay
        j_m0, j_rate = decay, -m0 * te * decay
        h00 = np.einsum("ij,ij->j", j_m0, j_m0)
        h01 = np.einsum("ij,ij->j", j_m0, j_rate)
        h11 = np.einsum("ij,ij->j", j_rate, j_rate)
        g0 = np.einsum("ij,ij->j", j_m0, residual)
        g1 = np.einsum("ij,ij->j", j_rate, residual)
        det = h00 * h11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            step_m0 = np.where(det > 0, (h11 * g0 - h01 * g1) / det, 0.0)
            step_rate = np.where(det > 0, (h00 * g1 - h01 * g0) / det, 0.0)
        new_m0, new_rate = m0 + step_m0, rate + step_rate
        new_cost = _cost(signal, te, new_m0, new_rate)
        better = np.isfinite(new_cost) & (new_cost < cost)  # a pixel keeps its last point if a step overshoots
        m0, rate = np.where(better, new_m0, m0), np.where(better, new_rate, rate)
        cost = np.where(better, new_cost, cost)

    with np.errstate(divide="ignore", invalid="ignore"):
        t2_ms = 1.0 / rate
    valid = np.isfinite(t2_ms) & (rate > 0) & (t2_ms <= t2_max_ms) & (m0 > 0)
    model = m0 * np.exp(-te * rate)
    r2 = r_squared(signal, model)

    def place(values: np.ndarray, fill: float | bool) -> np.ndarray:
        full = np.full(foreground.shape, fill, dtype=values.dtype)
        full[foreground] = values
        return full.reshape(pixel_shape)

    LOGGER.debug("T2 fit: %d of %d pixels fitted, %d valid", signal.shape[1], foreground.size, int(valid.sum()))
    return T2FitResult(
        t2_ms=place(np.where(valid, t2_ms, np.nan), np.nan),
        m0=place(m0, np.nan),
        r2=place(r2, 0.0),
        valid=place(valid, False),
    )


def _weighted_line(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares intercept and slope of y = c + k x per column."""
    sw = weight.sum(axis=0)
    mean_x = (weight * x).sum(axis=0) / sw
    mean_y = (weight * y).sum(axis=0) / sw
    dx = x - mean_x
    slope = (weight * dx * (y - mean_y)).sum(axis=0) / (weight * dx * dx).sum(axis=0)
    return mean_y - slope * mean_x, slope


def _cost(signal: np.ndarray, te: np.ndarray, m0: np.ndarray, rate: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        residual = signal - m0 * np.exp(-te * rate)
        return np.einsum("ij,ij->j", residual, residual)
