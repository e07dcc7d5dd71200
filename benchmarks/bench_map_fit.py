"""Benchmark: MOLLI T1 fit of one 256 x 218 slice with 8 images, on one core, against per-pixel curve_fit.

The reference is the straightforward way to fit a T1 map: scipy.optimize.curve_fit on every pixel, twice (the
image nearest the null taken as negative and as positive), keeping the better fit. It is timed on a random
subsample of the body pixels and extrapolated to the slice's body pixels. Both run in this process, now.

Run: .venv/bin/python benchmarks/bench_map_fit.py
"""

from __future__ import annotations

import os

# one core, for both contenders; must be set before numpy loads its BLAS
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import OptimizeWarning, curve_fit  # noqa: E402

from inference.t1_fit import fit_t1_molli  # noqa: E402

ROWS, COLUMNS = 256, 218
INVERSION_TIMES_MS = np.array([120.0, 1120.0, 2120.0, 3120.0, 4120.0, 200.0, 1200.0, 2200.0])  # MOLLI 5(3)3


def synthetic_slice(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(8, rows, columns) magnitude images, the true T1 map and the body mask: an elliptical body of tissues
    with T1 300-2000 ms, Rician noise at SNR 50, air around it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    body = ((x - COLUMNS / 2) / (0.42 * COLUMNS)) ** 2 + ((y - ROWS / 2) / (0.40 * ROWS)) ** 2 < 1.0
    t1_ms = np.where(body, rng.uniform(300.0, 2000.0, (ROWS, COLUMNS)), np.nan)
    a = np.where(body, rng.uniform(0.6, 1.2, (ROWS, COLUMNS)), 0.0)
    b_over_a = rng.uniform(1.8, 2.0, (ROWS, COLUMNS))
    t1_star_ms = np.where(body, t1_ms, 1000.0) / (b_over_a - 1.0)
    clean = np.abs(a - a * b_over_a * np.exp(-INVERSION_TIMES_MS[:, None, None] / t1_star_ms))
    sigma = 1.0 / 50.0
    noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
    return noisy, t1_ms, body


def _model(ti_ms: np.ndarray, a: float, b: float, t1_star_ms: float) -> np.ndarray:
    return a - b * np.exp(-ti_ms / t1_star_ms)


def curve_fit_pixel(magnitude: np.ndarray, ti_ms: np.ndarray) -> float:
    """T1 of one pixel by curve_fit with polarity restoration around the minimum; NaN if both fits fail."""
    order = np.argsort(ti_ms)
    ti, signal = ti_ms[order], magnitude[order]
    null = int(np.argmin(signal))
    best_cost, best_t1 = np.inf, np.nan
    for negatives in (null, null + 1):
        signed = np.where(np.arange(signal.size) < negatives, -signal, signal)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                (a, b, t1_star), _ = curve_fit(
                    _model, ti, signed, p0=(signal.max(), 2 * signal.max(), 1000.0), maxfev=2000
                )
        except RuntimeError:
            continue
        cost = float(np.sum((signed - _model(ti, a, b, t1_star)) ** 2))
        if cost < best_cost and a != 0:
            best_cost, best_t1 = cost, t1_star * (b / a - 1.0)
    return best_t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the vectorised fit")
    parser.add_argument("--reference-pixels", type=int, default=400, help="pixels fitted by curve_fit")
    args = parser.parse_args()

    magnitude, t1_true_ms, body = synthetic_slice(seed=2024)
    fit_t1_molli(magnitude, INVERSION_TIMES_MS)  # warm-up
    times_s = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = fit_t1_molli(magnitude, INVERSION_TIMES_MS)
        times_s.append(time.perf_counter() - started)
    vectorised_s = statistics.median(times_s)

    rng = np.random.default_rng(7)
    body_rows, body_columns = np.nonzero(body)
    pick = rng.choice(body_rows.size, size=min(args.reference_pixels, body_rows.size), replace=False)
    started = time.perf_counter()
    reference_t1 = np.array(
        [curve_fit_pixel(magnitude[:, r, c], INVERSION_TIMES_MS) for r, c in zip(body_rows[pick], body_columns[pick],
                                                                                   strict=True)]
    )
    per_pixel_s = (time.perf_counter() - started) / pick.size
    reference_slice_s = per_pixel_s * body_rows.size

    ours = result.t1_ms[body_rows[pick], body_columns[pick]]
    agree = np.isfinite(ours) & np.isfinite(reference_t1)
    difference = np.median(np.abs(ours[agree] - reference_t1[agree]) / reference_t1[agree])
    error = np.nanmedian(np.abs(result.t1_ms[body] - t1_true_ms[body]) / t1_true_ms[body])
    print(f"slice {ROWS}x{COLUMNS}x{INVERSION_TIMES_MS.size}, body pixels {body_rows.size} "
          f"({body.mean():.0%} of the slice), one core")
    print(f"fit_t1_molli: {vectorised_s * 1000:.0f} ms per slice (median of {args.repeats}), "
          f"{result.valid[body].mean():.1%} of body pixels valid, median |error| vs truth {error:.2%}")
    print(f"curve_fit reference: {per_pixel_s * 1e3:.2f} ms per pixel over {pick.size} pixels, "
          f"{reference_slice_s:.1f} s per slice extrapolated")
    print(f"median |difference| between the two fits: {difference:.2e} (relative)")
    print(f"speed-up: {reference_slice_s / vectorised_s:.0f}x")


if __name__ == "__main__":
    main()
