"""Look-Locker (MOLLI) T1 fitting of magnitude inversion-recovery images.

The three-parameter model of Messroghli et al. (MRM 2004;52:141-146),

    S(TI) = | A - B exp(-TI / T1*) |,

is fitted to every pixel, and the apparent relaxation time is corrected as T1 = T1* (B / A - 1).

Magnitude images lose the sign of the signal before the null, so the fit restores the polarity: it tries every
null position (the first ``p`` images, in TI order, negative and the rest positive; the longest-TI image is always
taken as recovered past the null) and keeps the one with the smallest residual (Barral et al., MRM 2010;64:1057-1067,
fit with polarity restoration).

The fit is vectorised over pixels in two steps:

1. Variable projection on a grid. For a fixed T1* the model is linear in (A, B), so the least-squares residual for
   a candidate (T1*, null position) is the part of the signed signal outside a two-dimensional column space.
   With an orthonormal basis of that space precomputed per grid value, every candidate of every pixel is scored
   by two matrix products. The two best null positions are kept, each with a starting T1* interpolated
   between grid points.
2. Levenberg-Marquardt refinement of (A, B, 1/T1*) for both null positions of each pixel, with the damping and
   the accept/reject decision done per pixel and the 3x3 normal equations solved in closed form; the position
   with the smaller final residual wins (with a sample right at the null, the grid alone can pick wrongly).

Background pixels are left out before fitting (see :func:`foreground_mask`): they come out invalid (NaN maps,
R2 = 0) at no cost.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass

import numpy as np

from inference.errors import ShapeMismatchError, SignalError, TimingError

LOGGER = logging.getLogger(__name__)

#: A pixel is fitted when its brightest image (the maximum over all images, so short-T1 tissue near its null at a
#: mid TI still counts by its recovered images) reaches NOISE_MULTIPLE times the background noise sigma (the
#: Rayleigh scale of magnitude noise; see :func:`background_noise`). The chance that a background pixel's maximum
#: of n images exceeds 5 sigma is about n exp(-12.5), 4e-5 for 11 images.
NOISE_MULTIPLE = 5.0
#: The noise threshold is kept between these fractions of the slice's reference signal (the 99th percentile of the
#: per-pixel maxima, robust to a few hot pixels). The floor keeps a background of near-constant values out; the
#: ceiling, the old fraction-of-the-brightest rule, takes over when the noise cannot be estimated (too few pixels,
#: or too little background, so that the estimate lands on tissue): the mask is never stricter than that rule.
MIN_FOREGROUND_FRACTION = 0.01
BACKGROUND_FRACTION = 0.1
_REFERENCE_PERCENTILE = 99.0
_MIN_NOISE_PIXELS = 64

#: Grid of T1* for the variable-projection search: log-spaced, about 14 % apart between these bounds.
_GRID_POINTS = 48
_T1_STAR_MIN_MS = 10.0
_REFINE_ITERATIONS = 20
_CHUNK_PIXELS = 4096
_MIN_IR_IMAGES = 4  # three model parameters plus one degree of freedom for the polarity choice


@dataclass(frozen=True)
class T1FitResult:
    """Per-pixel result of an inversion-recovery fit; every array has the images' trailing shape.

    Attributes
    ----------
    t1_ms
        Look-Locker corrected T1, NaN where the pixel is background or the fit is not valid.
    t1_star_ms
        Apparent T1* of the fitted recovery, NaN in the background.
    a, b
        Fitted A and B of ``|A - B exp(-TI/T1*)|`` in image units, NaN in the background.
    r2
        Coefficient of determination of the fitted magnitude curve against the magnitude images, in [0, 1];
        0 in the background.
    valid
        True where the fit converged to a physical recovery (A > 0, B > A, T1 within range).
    samples_used
        Number of images the pixel's fit used (all of them for MOLLI, 5 to 7 for ShMOLLI); 0 in the background.
    """

    t1_ms: np.ndarray
    t1_star_ms: np.ndarray
    a: np.ndarray
    b: np.ndarray
    r2: np.ndarray
    valid: np.ndarray
    samples_used: np.ndarray


@dataclass(frozen=True)
class PixelFit:
    """Fit of pixels laid out flat, shape (pixels,): the working form shared with the ShMOLLI fit."""

    t1_ms: np.ndarray
    t1_star_ms: np.ndarray
    a: np.ndarray
    b: np.ndarray
    r2: np.ndarray
    valid: np.ndarray
    samples_used: np.ndarray


def as_image_stack(
    images: np.ndarray, times_ms: np.ndarray, *, times_name: str, min_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check a stack of magnitude images and their timings, returning float64 copies.

    Parameters
    ----------
    images
        (n, ...) magnitude images, one per timing.
    times_ms
        (n,) timing of each image in ms (inversion or preparation time).
    times_name
        Name of the timing argument, used in error messages.
    min_images
        Fewest images the model can be fitted to.

    Raises
    ------
    ShapeMismatchError
        If the number of images and timings differ.
    TimingError
        If the timings are not a finite one-dimensional array.
    SignalError
        If there are too few images or negative values.
    """
    stack = np.asarray(images, dtype=np.float64)
    times = np.asarray(times_ms, dtype=np.float64)
    if times.ndim != 1:
        raise TimingError(f"{times_name} must be one-dimensional, got shape {times.shape}")
    if stack.ndim < 1 or stack.shape[0] != times.shape[0]:
        raise ShapeMismatchError(
            f"images must have one entry per value of {times_name} along axis 0: "
            f"got images of shape {stack.shape} and {times.shape[0]} timings"
        )
    if times.shape[0] < min_images:
        raise SignalError(f"at least {min_images} images are needed, got {times.shape[0]}")
    if not np.all(np.isfinite(times)):
        raise TimingError(f"{times_name} must be finite, got {times.tolist()}")
    lowest = np.nanmin(stack) if np.any(np.isfinite(stack)) else 0.0
    if lowest < 0:
        raise SignalError(f"magnitude images must be non-negative, got a minimum of {lowest:g}")
    return stack, times


@functools.lru_cache(maxsize=64)
def rayleigh_max_mode(n_images: int) -> float:
    """Mode of the largest of ``n_images`` Rayleigh samples of scale 1 (1 for one image, about 2.1 for eight).

    The density is n (1 - exp(-x^2 / 2))^(n - 1) x exp(-x^2 / 2); its maximum is found on a fine grid.
    """
    x = np.linspace(0.01, 8.0, 8000)
    u = 0.5 * x * x
    log_density = (n_images - 1) * np.log(-np.expm1(-u)) + np.log(x) - u
    return float(x[int(np.argmax(log_density))])


def _half_sample_mode(sorted_values: np.ndarray) -> float:
    """Robust mode of sorted values: repeatedly keep the half with the smallest range (Bickel & Fruehwirth 2006)."""
    values = sorted_values
    while values.size > 3:
        half = (values.size + 1) // 2
        widths = values[half - 1 :] - values[: values.size - half + 1]
        start = int(np.argmin(widths))
        values = values[start : start + half]
    return float(np.median(values))


def background_noise(flat_images: np.ndarray) -> float:
    """Rayleigh scale (sigma) of the background noise of (n, pixels) magnitude images, in image units.

    Air fills the darkest part of a slice and its per-pixel maxima over the n images pile up around the mode of
    the largest of n Rayleigh samples (:func:`rayleigh_max_mode` sigma). That pile is found as the robust mode of
    the lower half of the positive maxima (exact zeros, a scanner's zero-filled border, are left out), so the
    estimate holds while air is a sizeable part of the slice; with little air it lands on tissue and is too high,
    which :func:`foreground_mask` caps. NaN with fewer than 64 positive pixels.
    """
    images = np.asarray(flat_images, dtype=np.float64)
    finite = np.all(np.isfinite(images), axis=0)
    peak = images[:, finite].max(axis=0) if np.any(finite) else np.zeros(0)
    positive = np.sort(peak[peak > 0])
    if positive.size < _MIN_NOISE_PIXELS:
        return float("nan")
    lower_half = positive[: (positive.size + 1) // 2]
    return _half_sample_mode(lower_half) / rayleigh_max_mode(images.shape[0])


def foreground_mask(flat_images: np.ndarray, background_fraction: float = BACKGROUND_FRACTION) -> np.ndarray:
    """Pixels bright enough to fit, from (n, pixels) images.

    A pixel is fitted when its maximum over the images reaches NOISE_MULTIPLE times the background noise
    (:func:`background_noise`), with that threshold kept between MIN_FOREGROUND_FRACTION and
    ``background_fraction`` of the reference signal (see :data:`NOISE_MULTIPLE`; the ceiling alone when the
    noise cannot be estimated). A threshold on the brightest
    pixel alone dropped short-T1 and low-proton-density tissue (vials, myocardium beside bright fat and blood).
    ``background_fraction`` 0 fits every finite pixel. Pixels with any non-finite value are background.
    """
    images = np.asarray(flat_images, dtype=np.float64)
    finite = np.all(np.isfinite(images), axis=0)
    if not np.any(finite):
        return finite
    peak = np.where(finite, np.max(np.where(np.isfinite(images), images, 0.0), axis=0), 0.0)
    reference = float(np.percentile(peak[finite], _REFERENCE_PERCENTILE))
    if reference <= 0:
        return np.zeros_like(finite)
    noise_threshold = NOISE_MULTIPLE * background_noise(images)
    ceiling = background_fraction * reference
    if np.isfinite(noise_threshold):
        threshold = min(ceiling, max(MIN_FOREGROUND_FRACTION * reference, noise_threshold))
    else:
        threshold = ceiling
    LOGGER.debug(
        "foreground: noise threshold %.4g, reference %.4g, threshold %.4g", noise_threshold, reference, threshold
    )
    return finite & (peak >= threshold)


def fit_t1_molli(
    magnitude: np.ndarray,
    inversion_times_ms: np.ndarray,
    *,
    t1_max_ms: float = 4000.0,
    background_fraction: float = BACKGROUND_FRACTION,
) -> T1FitResult:
    """Fit T1 with the MOLLI three-parameter model and Look-Locker correction.

    Parameters
    ----------
    magnitude
        (n, ...) magnitude images in any order; any trailing shape (a slice, a volume, a vector of pixels).
    inversion_times_ms
        (n,) effective inversion time of each image in ms; the images are sorted by it here.
    t1_max_ms
        Longest T1 (and T1*) taken as valid; longer fits are marked invalid.
    background_fraction
        Ceiling of the background threshold as a fraction of the slice's reference signal
        (:func:`foreground_mask`: pixels are fitted down to five times the background noise); 0 fits every pixel.

    Returns
    -------
    T1FitResult
        Maps with the images' trailing shape.

    Raises
    ------
    ShapeMismatchError, TimingError, SignalError
        If the images and inversion times do not describe an inversion-recovery series.
    """
    if not t1_max_ms > _T1_STAR_MIN_MS:
        raise TimingError(f"t1_max_ms must exceed {_T1_STAR_MIN_MS} ms, got {t1_max_ms}")
    stack, ti_ms = as_image_stack(
        magnitude, inversion_times_ms, times_name="inversion_times_ms", min_images=_MIN_IR_IMAGES
    )
    if np.any(ti_ms < 0):
        raise TimingError(f"inversion_times_ms must be non-negative, got {ti_ms.tolist()}")
    pixel_shape = stack.shape[1:]
    flat = stack.reshape(stack.shape[0], -1)
    started = time.perf_counter()
    foreground = foreground_mask(flat, background_fraction)
    fit = fit_ir_pixels(flat[:, foreground], ti_ms, t1_max_ms=t1_max_ms)
    LOGGER.debug(
        "MOLLI fit: %d of %d pixels fitted, %d valid, in %.3f s",
        int(foreground.sum()), foreground.size, int(fit.valid.sum()), time.perf_counter() - started,
    )
    return expand_fit(fit, foreground, pixel_shape)


def expand_fit(fit: PixelFit, foreground: np.ndarray, pixel_shape: tuple[int, ...]) -> T1FitResult:
    """Place a fit of the foreground pixels into full maps: NaN (R2 0, invalid) in the background."""

    def place(values: np.ndarray, fill: float | bool) -> np.ndarray:
        full = np.full(foreground.shape, fill, dtype=values.dtype)
        full[foreground] = values
        return full.reshape(pixel_shape)

    return T1FitResult(
        t1_ms=place(fit.t1_ms, np.nan),
        t1_star_ms=place(fit.t1_star_ms, np.nan),
        a=place(fit.a, np.nan),
        b=place(fit.b, np.nan),
        r2=place(fit.r2, 0.0),
        valid=place(fit.valid, False),
        samples_used=place(fit.samples_used, 0),
    )


def fit_ir_pixels(signal: np.ndarray, inversion_times_ms: np.ndarray, *, t1_max_ms: float) -> PixelFit:
    """Fit the three-parameter model to (n, pixels) magnitudes, in any TI order; see the module docstring."""
    order = np.argsort(inversion_times_ms, kind="stable")
    ti_ms = np.asarray(inversion_times_ms, dtype=np.float64)[order]
    magnitude = np.asarray(signal, dtype=np.float64)[order]
    n_images, n_pixels = magnitude.shape
    if n_pixels == 0:
        empty = np.empty(0)
        return PixelFit(empty, empty, empty, empty, empty, np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))

    t1_star_grid_ms = np.geomspace(_T1_STAR_MIN_MS, t1_max_ms, _GRID_POINTS)
    nulls, t1_star_start_ms = _grid_search(magnitude, ti_ms, t1_star_grid_ms)
    # both polarity candidates are refined side by side, as 2 x pixels columns
    null_index = nulls.reshape(-1)
    magnitude_twice = np.concatenate([magnitude, magnitude], axis=1)
    signed = np.where(np.arange(n_images)[:, None] < null_index[None, :], -magnitude_twice, magnitude_twice)
    rate = 1.0 / t1_star_start_ms.reshape(-1)
    a, b = _linear_ab(signed, ti_ms, rate)
    a, b, rate, cost = _refine(
        signed, ti_ms, a, b, rate, rate_bounds=(1.0 / t1_max_ms, 1.0 / _T1_STAR_MIN_MS)
    )
    keep_second = cost[n_pixels:] < cost[:n_pixels]
    a, b, rate = (np.where(keep_second, values[n_pixels:], values[:n_pixels]) for values in (a, b, rate))

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t1_star_ms = 1.0 / rate
        t1_ms = t1_star_ms * (b / a - 1.0)
        model = np.abs(a - b * np.exp(-ti_ms[:, None] * rate))
    valid = (
        np.isfinite(t1_ms)
        & (a > 0)
        & (b > a)
        & (t1_star_ms >= _T1_STAR_MIN_MS)
        & (t1_star_ms <= t1_max_ms)
        & (t1_ms <= t1_max_ms)
    )
    r2 = r_squared(magnitude, model)
    return PixelFit(
        t1_ms=np.where(valid, t1_ms, np.nan),
        t1_star_ms=t1_star_ms,
        a=a,
        b=b,
        r2=r2,
        valid=valid,
        samples_used=np.full(n_pixels, n_images, dtype=np.int64),
    )


def _grid_search(
    magnitude: np.ndarray, ti_ms: np.ndarray, t1_star_grid_ms: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best and runner-up (null position, T1*) per pixel by variable projection.

    Returns two (2, pixels) arrays: the null positions of the two polarities with the smallest residual and a
    starting T1* for each, from a parabola through the residuals at the best grid point and its neighbours (the
    grid is uniform in log T1*). Both are refined: with a sample close to the null, the polarity that is best on
    the grid is not always the best once T1* is off the grid.
    """
    n_images, n_pixels = magnitude.shape
    n_grid = t1_star_grid_ms.size
    decay = np.exp(-ti_ms[None, :] / t1_star_grid_ms[:, None])  # (grid, images)
    design = np.stack([np.ones_like(decay), decay], axis=-1)  # (grid, images, 2)
    basis, _ = np.linalg.qr(design)  # orthonormal columns spanning {1, exp(-TI/T1*)}
    # null position p: images 0..p-1 negative; p = n_images (all negative) is left out on purpose
    signs = np.where(np.arange(n_images)[None, :] < np.arange(n_images)[:, None], -1.0, 1.0)  # (p, images)
    # columns ordered (p, grid) so that the search over the grid runs along contiguous memory
    first = (signs[:, None, :] * basis[None, :, :, 0]).reshape(n_images * n_grid, n_images)
    second = (signs[:, None, :] * basis[None, :, :, 1]).reshape(n_images * n_grid, n_images)
    first_t = np.ascontiguousarray(first.T, dtype=np.float32)
    second_t = np.ascontiguousarray(second.T, dtype=np.float32)

    nulls = np.empty((2, n_pixels), dtype=np.int64)
    start_ms = np.empty((2, n_pixels))
    log_grid = np.log(t1_star_grid_ms)
    log_step = log_grid[1] - log_grid[0]
    data = np.ascontiguousarray(magnitude.T, dtype=np.float32)  # (pixels, images)
    for start in range(0, n_pixels, _CHUNK_PIXELS):
        chunk = data[start : start + _CHUNK_PIXELS]
        stop = start + chunk.shape[0]
        energy = chunk @ first_t
        np.square(energy, out=energy)
        other = chunk @ second_t
        np.square(other, out=other)
        energy += other  # squared norm of the projection: the larger, the smaller the residual
        energy = energy.reshape(-1, n_images, n_grid)
        best_on_grid = np.argmax(energy, axis=2)  # (chunk, p)
        best_energy = np.take_along_axis(energy, best_on_grid[:, :, None], axis=2)[:, :, 0]
        ranked = np.argsort(-best_energy, axis=1)[:, :2]  # (chunk, 2) best two null positions
        nulls[:, start:stop] = ranked.T
        best = np.take_along_axis(best_on_grid, ranked, axis=1)  # (chunk, 2)
        at = np.take_along_axis(energy, ranked[:, :, None], axis=1)  # (chunk, 2, grid)
        centre = np.take_along_axis(at, best[:, :, None], axis=2)[:, :, 0].astype(np.float64)
        below = np.take_along_axis(at, np.maximum(best - 1, 0)[:, :, None], axis=2)[:, :, 0].astype(np.float64)
        above = np.take_along_axis(at, np.minimum(best + 1, n_grid - 1)[:, :, None], axis=2)[:, :, 0]
        above = above.astype(np.float64)
        curvature = below - 2.0 * centre + above
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(curvature < 0, 0.5 * (below - above) / curvature, 0.0)
        offset = np.clip(np.nan_to_num(offset), -0.5, 0.5)
        start_ms[:, start:stop] = np.exp(log_grid[best] + offset * log_step).T
    return nulls, start_ms


def _linear_ab(signed: np.ndarray, ti_ms: np.ndarray, rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares A, B of ``A - B u`` with u = exp(-TI * rate), per pixel, in closed form."""
    u = np.exp(-ti_ms[:, None] * rate[None, :])
    n = float(ti_ms.size)
    su, suu = u.sum(axis=0), (u * u).sum(axis=0)
    sd, sud = signed.sum(axis=0), (u * signed).sum(axis=0)
    det = n * suu - su * su
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (sd * suu - su * sud) / det
        b = (su * sd - n * sud) / det
    bad = ~np.isfinite(a) | ~np.isfinite(b)
    a[bad], b[bad] = signed.mean(axis=0)[bad], 0.0
    return a, b


def _refine(
    signed: np.ndarray,
    ti_ms: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rate: np.ndarray,
    *,
    rate_bounds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on (A, B, rate) per pixel with the polarity fixed; returns them and the cost.

    Pixels leave the iteration once an accepted step has moved their rate by less than a part in 10^5 (the
    step after it would be far smaller still), once the damping has grown so large that no step helps, or once
    the rate is well outside ``rate_bounds`` (1/ms; such a fit is invalid whatever follows), so the work shrinks
    as the fit converges.
    """
    ti = ti_ms[:, None]
    a, b, rate = a.copy(), b.copy(), rate.copy()
    u_all = np.exp(-ti * rate)
    residual_all = signed - (a - b * u_all)
    cost = np.einsum("ij,ij->j", residual_all, residual_all)
    damping_all = np.full(a.shape, 1e-3)
    active = np.arange(a.size)
    u, residual, data = u_all, residual_all, signed
    for _ in range(_REFINE_ITERATIONS):
        if active.size == 0:
            break
        a_k, b_k, rate_k, cost_k, damping = a[active], b[active], rate[active], cost[active], damping_all[active]
        j_r = b_k * ti * u
        h_ab = -u.sum(axis=0)
        h_ar = j_r.sum(axis=0)
        h_bb = np.einsum("ij,ij->j", u, u)
        h_br = -np.einsum("ij,ij->j", u, j_r)
        h_rr = np.einsum("ij,ij->j", j_r, j_r)
        g_a = residual.sum(axis=0)
        g_b = -np.einsum("ij,ij->j", u, residual)
        g_r = np.einsum("ij,ij->j", j_r, residual)
        scale = 1.0 + damping
        step_a, step_b, step_r = _solve_symmetric3(
            ti_ms.size * scale, h_ab, h_ar, h_bb * scale, h_br, h_rr * scale, g_a, g_b, g_r
        )
        new_a, new_b, new_rate = a_k + step_a, b_k + step_b, rate_k + step_r
        with np.errstate(over="ignore", invalid="ignore"):
            new_u = np.exp(-ti * new_rate)
            new_residual = data - (new_a - new_b * new_u)
            new_cost = np.einsum("ij,ij->j", new_residual, new_residual)
        better = np.isfinite(new_cost) & (new_cost < cost_k) & (new_rate > 0)
        a[active] = np.where(better, new_a, a_k)
        b[active] = np.where(better, new_b, b_k)
        rate[active] = np.where(better, new_rate, rate_k)
        cost[active] = np.where(better, new_cost, cost_k)
        damping = np.where(better, damping * 0.2, damping * 10.0)
        damping_all[active] = damping
        # a tiny undamped step means converged; a damping this large means no step will help
        current_rate = rate[active]
        converged = (
            (better & (np.abs(step_r) <= 1e-5 * rate_k))
            | (damping >= 1e6)
            | (current_rate < 0.5 * rate_bounds[0])
            | (current_rate > 2.0 * rate_bounds[1])
        )
        keep = ~converged
        active = active[keep]
        u = np.where(better, new_u, u)[:, keep]
        residual = np.where(better, new_residual, residual)[:, keep]
        data = data[:, keep]
    return a, b, rate, cost


def _solve_symmetric3(
    m00: np.ndarray, m01: np.ndarray, m02: np.ndarray, m11: np.ndarray, m12: np.ndarray, m22: np.ndarray,
    r0: np.ndarray, r1: np.ndarray, r2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve symmetric 3x3 systems element-wise by the adjugate; singular systems give a zero step."""
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_det = np.where(np.abs(det) > 0, 1.0 / det, 0.0)
    x0 = (c00 * r0 + c01 * r1 + c02 * r2) * inv_det
    x1 = (c01 * r0 + c11 * r1 + c12 * r2) * inv_det
    x2 = (c02 * r0 + c12 * r1 + c22 * r2) * inv_det
    return (np.nan_to_num(x0), np.nan_to_num(x1), np.nan_to_num(x2))


def r_squared(observed: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Coefficient of determination per pixel of (n, pixels) data and model, clipped to [0, 1]."""
    ss_res = np.einsum("ij,ij->j", observed - model, observed - model)
    centred = observed - observed.mean(axis=0)
    ss_tot = np.einsum("ij,ij->j", centred, centred)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 0.0)
    return np.clip(np.nan_to_num(r2), 0.0, 1.0)
