"""Bloch simulation: analytic checks and the known biases of MOLLI and ShMOLLI."""

import numpy as np
import pytest
from scipy.optimize import curve_fit

from phantom.bloch import BlochError, simulate_longitudinal, simulate_signal
from phantom.model import SequenceKind
from phantom.schemes import make_scheme


def _fit_t1(ti_ms, signal):
    """Three-parameter fit A - B exp(-TI/T1*) with the Look-Locker correction T1 = T1* (B/A - 1)."""

    def model(t, a, b, t1_star):
        return a - b * np.exp(-t / t1_star)

    (a, b, t1_star), _ = curve_fit(model, ti_ms, signal, p0=(signal.max(), 2 * signal.max(), 800.0), maxfev=20000)
    return t1_star * (b / a - 1.0)


def test_inversion_recovery_without_readout_matches_analytic():
    scheme = make_scheme(SequenceKind.MOLLI_533, 900.0, np.random.default_rng(2))
    t1 = np.array([300.0, 1000.0, 1600.0])
    mz = simulate_longitudinal(scheme, t1, 50.0, flip_angle_deg=0.0)
    efficiency = scheme.inversion_efficiency
    ti = scheme.inversion_times_ms
    inversions = scheme.inversion_pulse_times_ms
    first = 1.0 - (1.0 + efficiency) * np.exp(-ti[:5, None] / t1)
    # Before the second inversion Mz has recovered from the first along the same curve.
    before_second = 1.0 - (1.0 + efficiency) * np.exp(-(inversions[1] - inversions[0]) / t1)
    second = 1.0 - (1.0 + efficiency * before_second) * np.exp(-ti[5:, None] / t1)
    assert np.allclose(mz, np.concatenate([first, second]), atol=1e-9)


def test_t2_preparation_without_readout_matches_analytic():
    scheme = make_scheme(SequenceKind.T2PREP, 1000.0, np.random.default_rng(3))
    t1, t2 = np.array([1000.0, 1200.0]), np.array([45.0, 60.0])
    mz = simulate_longitudinal(scheme, t1, t2, flip_angle_deg=0.0)
    delay = scheme.readout.centre_offset_ms  # from the end of the preparation to the k-space centre
    starts = scheme.readout_start_times_ms
    expected = []
    mz_after_prep, previous_end = None, None
    for start, prep in zip(starts, scheme.t2_prep_ms, strict=True):
        # Without readout pulses Mz only recovers between preparations (no T1 recovery during a preparation).
        before = (
            1.0 if previous_end is None else 1.0 - (1.0 - mz_after_prep) * np.exp(-(start - prep - previous_end) / t1)
        )
        mz_after_prep, previous_end = before * np.exp(-prep / t2), start
        expected.append(1.0 - (1.0 - mz_after_prep) * np.exp(-delay / t1))
    expected = np.array(expected)
    assert np.allclose(mz, expected, atol=1e-9)
    signal = simulate_signal(scheme, 1100.0, np.array([40.0, 80.0])).real
    assert np.all(np.diff(signal, axis=0) < 0)  # longer preparation, less signal
    assert signal[2, 0] / signal[0, 0] < signal[2, 1] / signal[0, 1]  # short T2 decays faster


@pytest.mark.parametrize("kind", [SequenceKind.MOLLI_533, SequenceKind.MOLLI_5S3S3S])
def test_molli_under_reads_long_t1(kind):
    t1 = np.array([400.0, 1000.0, 1600.0, 2000.0])
    errors = {}
    for rr in (600.0, 1000.0):
        scheme = make_scheme(kind, rr, np.random.default_rng(5), heart_rate_variability=0.0)
        signal = simulate_signal(scheme, t1, 50.0).real
        fitted = np.array([_fit_t1(scheme.inversion_times_ms, signal[:, i]) for i in range(t1.size)])
        errors[rr] = fitted / t1 - 1.0
        assert np.all(errors[rr] < -0.01)  # MOLLI under-reads
        assert errors[rr][-1] < errors[rr][0] - 0.03  # and more so for long T1
    if kind is SequenceKind.MOLLI_533:
        # Fixed beat counts: less recovery at a high heart rate, more under-reading. The 5s(3s)3s variant counts
        # seconds instead and was designed to avoid exactly this.
        assert errors[600.0][-1] < errors[1000.0][-1]


def test_shmolli_sets_after_one_recovery_beat_bias_long_t1():
    scheme = make_scheme(SequenceKind.SHMOLLI, 800.0, np.random.default_rng(6), heart_rate_variability=0.0)
    t1 = np.array([350.0, 1800.0])
    signal = simulate_signal(scheme, t1, np.array([45.0, 200.0])).real
    ti = scheme.inversion_times_ms
    all_seven = np.array([_fit_t1(ti, signal[:, i]) for i in range(2)])
    first_five = np.array([_fit_t1(ti[:5], signal[:5, i]) for i in range(2)])
    # Long T1: the later sets have not recovered, the 7-image fit is far off and the first 5 images do better.
    assert abs(first_five[1] / t1[1] - 1) + 0.1 < abs(all_seven[1] / t1[1] - 1)
    # Short T1: all seven images are usable (recovery is complete within one beat).
    assert abs(all_seven[0] / t1[0] - 1) < 0.08


def test_signal_negative_after_inversion_and_b1_changes_signal():
    scheme = make_scheme(SequenceKind.MOLLI_533, 1000.0, np.random.default_rng(1))
    signal = simulate_signal(scheme, np.array([1000.0]), np.array([50.0]))
    assert signal.shape == (8, 1) and signal.dtype == np.complex128
    assert signal[0, 0].real < 0 < signal[3, 0].real
    assert not np.allclose(signal, simulate_signal(scheme, 1000.0, 50.0, b1_scale=0.8))
    with pytest.raises(BlochError):
        simulate_signal(scheme, np.array([-1.0]), np.array([50.0]))
