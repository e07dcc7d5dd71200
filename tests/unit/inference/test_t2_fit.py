"""Tests of the T2-prep fit against mono-exponential decays written out here."""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import ShapeMismatchError, TimingError
from inference.mapping import MapKind, MappingScheme, reconstruct_map
from inference.t2_fit import fit_t2_prep

PREP_MS = np.array([0.0, 25.0, 55.0])


def decay(t2_ms: np.ndarray, m0: float, prep_ms: np.ndarray = PREP_MS) -> np.ndarray:
    return m0 * np.exp(-np.asarray(prep_ms)[:, None] / np.asarray(t2_ms)[None, :])


def test_exact_decays_are_recovered_in_any_image_order():
    t2_ms = np.linspace(20.0, 250.0, 100)
    signal = decay(t2_ms, 300.0)
    order = [2, 0, 1]
    result = fit_t2_prep(signal[order], PREP_MS[order])
    assert result.valid.all()
    np.testing.assert_allclose(result.t2_ms, t2_ms, rtol=1e-9)
    np.testing.assert_allclose(result.m0, 300.0, rtol=1e-9)
    assert np.all(result.r2 > 0.999999)


def test_myocardium_and_blood_t2_within_5_percent_under_rician_noise():
    rng = np.random.default_rng(21)
    pixels = 4000
    for t2_true in (50.0, 250.0):  # myocardium and blood at 1.5 T
        clean = decay(np.full(pixels, t2_true), 1.0)
        sigma = 1.0 / 50.0
        noisy = np.hypot(clean + rng.normal(0, sigma, clean.shape), rng.normal(0, sigma, clean.shape))
        result = fit_t2_prep(noisy, PREP_MS, t2_max_ms=1000.0)
        assert result.valid.mean() > 0.99
        assert abs(np.nanmedian(result.t2_ms) / t2_true - 1.0) < 0.05
        assert np.median(result.r2) > 0.9


def test_background_and_non_decaying_pixels_are_invalid():
    rng = np.random.default_rng(4)
    signal = decay(np.array([45.0, 45.0, 45.0]), 100.0)
    signal[:, 1] = [50.0, 60.0, 70.0]  # rising: no T2
    signal[:, 2] = rng.rayleigh(0.5, 3)  # air
    result = fit_t2_prep(signal, PREP_MS)
    assert result.valid.tolist() == [True, False, False]
    assert np.isnan(result.t2_ms[1:]).all()
    assert result.r2[2] == 0.0
    assert abs(result.t2_ms[0] - 45.0) < 1e-6


def test_low_signal_tissue_beside_bright_fluid_is_fitted_and_air_is_not():
    """Myocardium-like T2 at a signal 1/25 of a bright fluid vial: below a tenth of the brightest pixels, but 20
    times the noise, so the noise-based foreground (inference.t1_fit.foreground_mask) keeps it."""
    rng = np.random.default_rng(12)
    rows, columns = np.indices((64, 64))
    dim = np.hypot(rows - 20, columns - 20) < 10
    fluid = np.hypot(rows - 40, columns - 42) < 14
    t2_ms = np.where(dim, 50.0, np.where(fluid, 250.0, 100.0))
    m0 = np.where(dim, 20.0, np.where(fluid, 500.0, 0.0))
    clean = (m0.ravel() * np.exp(-PREP_MS[:, None] / t2_ms.ravel())).reshape(3, 64, 64)
    noisy = np.hypot(clean + rng.normal(0, 1.0, clean.shape), rng.normal(0, 1.0, clean.shape))
    result = fit_t2_prep(noisy, PREP_MS, t2_max_ms=1000.0)
    assert result.valid[dim].mean() >= 0.98
    assert abs(np.nanmedian(result.t2_ms[dim]) / 50.0 - 1.0) < 0.1
    assert np.isnan(result.m0[~dim & ~fluid]).mean() > 0.999


def test_t2_above_the_maximum_is_invalid_and_the_slice_shape_is_kept():
    signal = decay(np.array([400.0, 60.0]), 10.0).reshape(3, 1, 2)
    result = fit_t2_prep(signal, PREP_MS)
    assert result.t2_ms.shape == (1, 2)
    assert result.valid.tolist() == [[False, True]]


@pytest.mark.parametrize(
    ("times", "error"),
    [
        (np.array([0.0, 25.0]), ShapeMismatchError),
        (np.array([0.0, 0.0, 0.0]), TimingError),
        (np.array([0.0, -25.0, 55.0]), TimingError),
    ],
)
def test_bad_preparation_times_are_refused(times, error):
    with pytest.raises(error):
        fit_t2_prep(np.ones((3, 4)), times)


def test_reconstruct_map_t2prep_returns_a_t2_map():
    signal = decay(np.array([45.0, 60.0]), 50.0)
    result = reconstruct_map(signal, PREP_MS, MappingScheme.T2PREP)
    assert result.kind is MapKind.T2 and result.method == "T2-prep 2-parameter"
    np.testing.assert_allclose(result.map_ms, [45.0, 60.0], rtol=1e-9)
    assert result.valid.all()
