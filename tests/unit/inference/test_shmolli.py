"""Tests of the ShMOLLI conditional T1 reconstruction, on Bloch-simulated ShMOLLI 5(1)1(1)1 signals.

The reference simulation (:mod:`tests.unit.inference.bloch_reference`) tracks the magnetisation through three
inversions and seven balanced SSFP readouts (alpha/2 - TR/2 preparation, alternating +-35 degree pulses, T1 and T2
relaxation between pulses), so the incomplete recovery before the second and third inversions is modelled, not
assumed.
"""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import ShapeMismatchError, TimingError
from inference.mapping import MapKind, reconstruct_map
from inference.shmolli import fit_t1_shmolli, infer_inversion_index
from inference.t1_fit import fit_t1_molli
from tests.unit.inference.bloch_reference import simulate_bssfp_ir

TRIGGER_DELAY_MS = 500.0


def simulate_shmolli(t1_ms, t2_ms, rr_ms, ti_ms=(100.0, 180.0, 260.0), flip_deg=35.0, tr_ms=2.8, n_pulses=70):
    """Signals (7, tissues) in acquisition order and their TIs, for M0 = 1."""
    inversions = [TRIGGER_DELAY_MS - ti_ms[0], 6 * rr_ms + TRIGGER_DELAY_MS - ti_ms[1],
                  8 * rr_ms + TRIGGER_DELAY_MS - ti_ms[2]]
    readouts = [beat * rr_ms + TRIGGER_DELAY_MS for beat in (0, 1, 2, 3, 4, 6, 8)]
    inversion_times_ms = np.array([ti_ms[0] + k * rr_ms for k in range(5)] + [ti_ms[1], ti_ms[2]])
    signals = simulate_bssfp_ir(
        t1_ms, t2_ms, inversions, readouts, flip_deg=flip_deg, tr_ms=tr_ms, n_pulses=n_pulses
    )
    return signals, inversion_times_ms


def test_inversion_index_is_inferred_from_the_tis_in_any_order():
    ti = np.array([180.0, 2100.0, 100.0, 4100.0, 260.0, 1100.0, 3100.0])
    assert infer_inversion_index(ti, rr_ms=1000.0).tolist() == [1, 0, 0, 0, 2, 0, 0]


def test_long_t1_plain_fit_reads_low_and_conditional_fit_uses_the_first_inversion_only():
    signal, ti = simulate_shmolli([1500.0], [250.0], rr_ms=1000.0)
    plain = fit_t1_molli(signal, ti).t1_ms[0]
    conditional = fit_t1_shmolli(signal, ti, rr_ms=1000.0)
    plain_error = plain / 1500.0 - 1.0
    conditional_error = conditional.t1_ms[0] / 1500.0 - 1.0
    assert plain_error < -0.05
    assert abs(conditional_error) < 0.04
    assert abs(conditional_error) < abs(plain_error) - 0.05
    assert conditional.samples_used[0] == 5


def test_short_t1_uses_all_seven_samples_and_gains_precision():
    rng = np.random.default_rng(5)
    signal, ti = simulate_shmolli([300.0], [45.0], rr_ms=1000.0)
    noiseless = fit_t1_shmolli(signal, ti, rr_ms=1000.0)
    assert noiseless.samples_used[0] == 7
    np.testing.assert_allclose(noiseless.t1_ms, fit_t1_molli(signal, ti).t1_ms, rtol=1e-9)
    assert abs(noiseless.t1_ms[0] / 300.0 - 1.0) < 0.05

    pixels = np.repeat(signal, 2000, axis=1)
    sigma = signal.max() / 30.0
    noisy = np.hypot(pixels + rng.normal(0, sigma, pixels.shape), rng.normal(0, sigma, pixels.shape))
    conditional = fit_t1_shmolli(noisy, ti, rr_ms=1000.0)
    first_only = fit_t1_molli(noisy[:5], ti[:5])
    assert np.nanstd(conditional.t1_ms) < 0.9 * np.nanstd(first_only.t1_ms)


def test_short_t1_without_a_first_inversion_fit_is_refitted_with_the_later_inversions():
    # Post-contrast blood at a slow heart rate: recovered by the first inversion's second image, so five points on a
    # flat line fix no recovery; the second and third inversions' samples are what ShMOLLI adds for this T1.
    rng = np.random.default_rng(11)
    signal, ti = simulate_shmolli([250.0], [150.0], rr_ms=1200.0)
    pixels = np.repeat(signal, 3000, axis=1)
    sigma = signal.max() / 30.0
    noisy = np.hypot(pixels + rng.normal(0, sigma, pixels.shape), rng.normal(0, sigma, pixels.shape))
    first_only = fit_t1_molli(noisy[:5], ti[:5])
    conditional = fit_t1_shmolli(noisy, ti, rr_ms=1200.0)
    assert np.mean(first_only.valid) < 0.9  # the first inversion alone leaves pixels without a value
    assert np.mean(conditional.valid) > 0.98
    assert abs(np.nanmedian(conditional.t1_ms) / 250.0 - 1.0) < 0.1
    assert set(np.unique(conditional.samples_used[conditional.valid])) <= {6, 7}


def test_given_inversion_index_and_shuffled_order_agree_with_inferred():
    rng = np.random.default_rng(2)
    signal, ti = simulate_shmolli([1500.0, 900.0, 350.0], [250.0, 45.0, 45.0], rr_ms=800.0)
    inferred = fit_t1_shmolli(signal, ti, rr_ms=800.0)
    order = rng.permutation(7)
    labels = np.array([1, 1, 1, 1, 1, 2, 3])[order]
    given = fit_t1_shmolli(signal[order], ti[order], rr_ms=800.0, inversion_index=labels)
    np.testing.assert_allclose(given.t1_ms, inferred.t1_ms, rtol=1e-9)
    assert given.samples_used.tolist() == inferred.samples_used.tolist()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rr_ms": 0.0}, TimingError),
        ({"rr_ms": 1000.0, "inversion_index": np.array([1, 1, 1, 2, 2, 3, 3])}, TimingError),
        ({"rr_ms": 1000.0, "inversion_index": np.array([1, 1, 1, 1, 1, 2])}, ShapeMismatchError),
        ({"rr_ms": 1000.0, "inversion_index": np.array([1, 1, 1, 1, 2, 3, 4])}, TimingError),
    ],
)
def test_series_that_are_not_shmolli_are_refused(kwargs, error):
    signal, ti = simulate_shmolli([1000.0], [45.0], rr_ms=1000.0)
    with pytest.raises(error):
        fit_t1_shmolli(signal, ti, **kwargs)


def test_reconstruct_map_shmolli_needs_the_rr_interval_and_uses_the_conditional_fit():
    signal, ti = simulate_shmolli([1500.0], [250.0], rr_ms=1000.0)
    with pytest.raises(TimingError, match="rr_ms"):
        reconstruct_map(signal, ti, "shmolli")
    result = reconstruct_map(signal, ti, "shmolli", rr_ms=1000.0)
    assert result.kind is MapKind.T1 and result.method == "ShMOLLI conditional"
    np.testing.assert_allclose(result.map_ms, fit_t1_shmolli(signal, ti, rr_ms=1000.0).t1_ms)
