"""Tests of the MOLLI three-parameter T1 fit, against signals from independent forward models.

Bloch-simulated signals come from the tests' reference simulator (:mod:`tests.unit.inference.bloch_reference`):
MOLLI 5(3)3 with a balanced SSFP readout, inversions, alpha/2 - TR/2 preparation, alternating +-alpha pulses, T1 and
T2 relaxation between pulses, and the signal read at the echo of the centre k-space line, which defines the
effective TI.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import ShapeMismatchError, SignalError, TimingError, UnknownSchemeError
from inference.mapping import MapKind, MappingScheme, reconstruct_map
from inference.t1_fit import background_noise, fit_t1_molli, foreground_mask, rayleigh_max_mode
from tests.unit.inference.bloch_reference import simulate_bssfp_ir

RR_MS = 1000.0
TRIGGER_DELAY_MS = 500.0


def molli_533(rr_ms: float = RR_MS, ti1_ms: float = 120.0, ti2_ms: float = 200.0):
    """Inversion and readout instants of MOLLI 5(3)3 and the images' effective TIs (acquisition order)."""
    inversions = [TRIGGER_DELAY_MS - ti1_ms, 8 * rr_ms + TRIGGER_DELAY_MS - ti2_ms]
    readouts = [beat * rr_ms + TRIGGER_DELAY_MS for beat in (*range(5), *range(8, 11))]
    inversion_times_ms = np.array([ti1_ms + k * rr_ms for k in range(5)] + [ti2_ms + k * rr_ms for k in range(3)])
    return inversions, readouts, inversion_times_ms


def look_locker_curve(t1_ms, a, b_over_a, inversion_times_ms):
    """Three-parameter magnitude curve; independent of the fit's internals."""
    t1_star = np.asarray(t1_ms) / (np.asarray(b_over_a) - 1.0)
    ti = np.asarray(inversion_times_ms)[:, None]
    return np.abs(a - a * b_over_a * np.exp(-ti / t1_star))


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))


def relative_error(measured: np.ndarray, truth: float | np.ndarray) -> np.ndarray:
    return np.asarray(measured) / truth - 1.0


def test_exact_model_is_recovered_over_the_clinical_range_including_samples_at_the_null():
    t1_ms = np.linspace(150.0, 2500.0, 400)
    b_over_a = np.linspace(1.6, 2.2, 400)
    _, _, ti = molli_533()
    signal = look_locker_curve(t1_ms, 1.0, b_over_a, ti)
    result = fit_t1_molli(signal, ti)
    assert result.valid.all()
    assert np.max(np.abs(relative_error(result.t1_ms, t1_ms))) < 1e-6
    assert np.allclose(result.b / result.a, b_over_a, rtol=1e-6)
    assert np.all(result.r2 > 0.999999)


def test_images_are_sorted_by_inversion_time_not_taken_in_given_order():
    rng = np.random.default_rng(7)
    _, _, ti = molli_533()
    signal = look_locker_curve(np.full(50, 1100.0), 1.0, 1.9, ti) + rng.normal(0, 0.002, (8, 50))
    signal = np.abs(signal)
    in_order = fit_t1_molli(signal, ti)
    order = rng.permutation(ti.size)
    shuffled = fit_t1_molli(signal[order], ti[order])
    np.testing.assert_allclose(shuffled.t1_ms, in_order.t1_ms, rtol=1e-9)
    np.testing.assert_allclose(in_order.t1_ms, 1100.0, rtol=0.02)


def test_bloch_molli_long_t2_tissue_is_recovered_within_3_percent():
    # With T2 long enough that the bSSFP train saturates like a spoiled readout, the Look-Locker correction holds.
    inversions, readouts, ti = molli_533()
    signal = simulate_bssfp_ir(np.array([950.0]), np.array([250.0]), inversions, readouts)
    result = fit_t1_molli(signal, ti)
    assert result.valid.all()
    assert abs(relative_error(result.t1_ms[0], 950.0)) < 0.03


def test_bloch_molli_myocardium_reads_low_by_its_short_t2():
    # Myocardium at 1.5 T: T1 950 ms, T2 45 ms. The bSSFP readout drives relaxation with T2 as well, so MOLLI
    # under-reads by several percent (Chow et al., ISMRM 2012 #395: about 10 % in myocardium-like phantoms).
    inversions, readouts, ti = molli_533()
    myocardium = simulate_bssfp_ir(np.array([950.0]), np.array([45.0]), inversions, readouts)
    long_t2 = simulate_bssfp_ir(np.array([950.0]), np.array([250.0]), inversions, readouts)
    error_myocardium = relative_error(fit_t1_molli(myocardium, ti).t1_ms[0], 950.0)
    error_long_t2 = relative_error(fit_t1_molli(long_t2, ti).t1_ms[0], 950.0)
    assert -0.12 < error_myocardium < -0.03
    assert error_myocardium < error_long_t2 - 0.03


def test_bloch_molli_blood_reads_low_and_more_so_at_a_fast_heart_rate():
    # Blood at 1.5 T: T1 1550 ms, T2 250 ms. Long T1 does not recover between MOLLI's sets, so it reads low,
    # the more the shorter the RR interval.
    errors = {}
    for rr_ms in (1000.0, 600.0):
        inversions, readouts, ti = molli_533(rr_ms)
        signal = simulate_bssfp_ir(np.array([1550.0, 950.0]), np.array([250.0, 250.0]), inversions, readouts)
        result = fit_t1_molli(signal, ti)
        assert result.valid.all()
        errors[rr_ms] = relative_error(result.t1_ms, np.array([1550.0, 950.0]))
    blood_60_bpm, short_t1_60_bpm = errors[1000.0]
    assert -0.06 < blood_60_bpm < -0.01
    assert blood_60_bpm < short_t1_60_bpm
    assert errors[600.0][0] < blood_60_bpm - 0.01


def test_rician_noise_at_snr_50_biases_t1_by_less_than_2_percent():
    rng = np.random.default_rng(11)
    inversions, readouts, ti = molli_533()
    clean = simulate_bssfp_ir(np.array([950.0, 1550.0]), np.array([45.0, 250.0]), inversions, readouts)
    reference = fit_t1_molli(clean, ti).t1_ms
    pixels = 3000
    sigma = clean.max() / 50.0
    for tissue in range(2):
        noisy = rician(np.repeat(clean[:, tissue : tissue + 1], pixels, axis=1), sigma, rng)
        result = fit_t1_molli(noisy, ti)
        assert result.valid.mean() > 0.99
        assert abs(relative_error(np.nanmean(result.t1_ms), reference[tissue])) < 0.02
        assert 0.9 < np.median(result.r2) < 1.0


def test_background_pixels_are_invalid_nan_and_a_slice_keeps_its_shape():
    rng = np.random.default_rng(3)
    _, _, ti = molli_533()
    t1_map = np.full((12, 10), 1000.0)
    signal = look_locker_curve(t1_map.ravel(), 100.0, 1.9, ti).reshape(8, 12, 10)
    signal[:, :4] = rng.rayleigh(1.0, (8, 4, 10))  # air: noise only, 1 % of tissue signal
    result = fit_t1_molli(signal, ti)
    assert result.t1_ms.shape == (12, 10)
    assert not result.valid[:4].any()
    assert np.isnan(result.t1_ms[:4]).all()
    assert np.all(result.r2[:4] == 0.0)
    np.testing.assert_allclose(result.t1_ms[4:], 1000.0, rtol=1e-6)


def _vial_slice(rng: np.random.Generator, size: int = 64):
    """MOLLI 5(3)3 images of two vials in air, noise sigma 1: 300 ms at a proton density 1/27 of the 1900 ms one."""
    _, _, ti = molli_533()
    rows, columns = np.indices((size, size))
    short = np.hypot(rows - 20, columns - 20) < 10
    bright = np.hypot(rows - 40, columns - 42) < 14
    t1_ms = np.where(short, 300.0, np.where(bright, 1900.0, 1000.0))
    a = np.where(short, 15.0, np.where(bright, 400.0, 0.0))
    clean = look_locker_curve(t1_ms.ravel(), a.ravel(), 1.9, ti).reshape(len(ti), size, size)
    return rician(clean, 1.0, rng), ti, short, bright


def test_short_t1_low_signal_tissue_is_fitted_and_air_is_not():
    """A 300 ms vial whose recovered signal is 15 sigma, beside one 27 times brighter: the old threshold (a tenth of
    the brightest pixels) left it unfitted; a threshold on the noise fits it."""
    images, ti, short, bright = _vial_slice(np.random.default_rng(5))
    result = fit_t1_molli(images, ti)
    assert result.valid[short].mean() >= 0.98
    assert abs(np.nanmedian(result.t1_ms[short]) / 300.0 - 1.0) < 0.05
    assert result.valid[bright].mean() == 1.0
    air = ~short & ~bright
    assert np.isnan(result.a[air]).mean() > 0.999  # not even fitted
    assert not result.valid[air].any()


def test_background_noise_is_estimated_from_the_air():
    rng = np.random.default_rng(8)
    images, _, short, bright = _vial_slice(rng)
    assert background_noise(images.reshape(images.shape[0], -1)) == pytest.approx(1.0, rel=0.1)
    # With a third of the slice air and the rest tissue.
    _, _, ti = molli_533()
    tissue = np.ones((64, 64), dtype=bool)
    tissue[:, :21] = False
    clean = look_locker_curve(np.full(tissue.size, 1200.0), np.where(tissue.ravel(), 50.0, 0.0), 1.9, ti)
    assert background_noise(rician(clean, 2.0, rng)) == pytest.approx(2.0, rel=0.1)
    assert rayleigh_max_mode(1) == pytest.approx(1.0, abs=1e-3)  # the Rayleigh mode is sigma
    assert np.isnan(background_noise(np.ones((8, 10))))  # too few pixels to say


def test_foreground_is_never_stricter_than_a_tenth_of_the_reference_and_zeros_stay_out():
    rng = np.random.default_rng(9)
    tissue = rng.uniform(50.0, 1000.0, (8, 500))  # no air at all: the noise estimate lands on tissue
    old_rule = tissue.max(axis=0) >= 0.1 * np.percentile(tissue.max(axis=0), 99)
    assert np.all(foreground_mask(tissue)[old_rule])
    zero_filled = np.concatenate([np.zeros((8, 300)), tissue], axis=1)  # a scanner's zeroed border
    mask = foreground_mask(zero_filled)
    assert not mask[:300].any() and mask[300:].all()
    assert foreground_mask(zero_filled, background_fraction=0.0).all()


def test_t1_beyond_the_maximum_is_marked_invalid():
    _, _, ti = molli_533()
    signal = look_locker_curve(np.array([3000.0, 900.0]), 1.0, 1.9, ti)
    result = fit_t1_molli(signal, ti, t1_max_ms=2000.0)
    assert result.valid.tolist() == [False, True]
    assert np.isnan(result.t1_ms[0])


@pytest.mark.parametrize(
    ("images", "times", "error"),
    [
        (np.ones((8, 4)), np.arange(7.0), ShapeMismatchError),
        (np.ones((3, 4)), np.arange(3.0), SignalError),
        (-np.ones((8, 4)), np.arange(8.0), SignalError),
        (np.ones((8, 4)), np.array([np.nan, *range(7)]), TimingError),
        (np.ones((8, 4)), np.arange(8.0) - 1.0, TimingError),
    ],
)
def test_inputs_that_are_not_an_inversion_recovery_series_are_refused(images, times, error):
    with pytest.raises(error):
        fit_t1_molli(images, times)


def test_reconstruct_map_molli_returns_the_t1_fit_as_a_t1_map():
    _, _, ti = molli_533()
    signal = look_locker_curve(np.array([800.0, 1200.0]), 1.0, 1.9, ti)
    result = reconstruct_map(signal, ti, "molli")
    assert result.kind is MapKind.T1 and result.scheme is MappingScheme.MOLLI
    assert result.method == "MOLLI 3-parameter + Look-Locker"
    np.testing.assert_allclose(result.map_ms, [800.0, 1200.0], rtol=1e-6)
    np.testing.assert_array_equal(result.r2, fit_t1_molli(signal, ti).r2)


def test_reconstruct_map_refuses_an_unknown_scheme():
    _, _, ti = molli_533()
    with pytest.raises(UnknownSchemeError, match="sasha"):
        reconstruct_map(np.ones((8, 2)), ti, "sasha")
