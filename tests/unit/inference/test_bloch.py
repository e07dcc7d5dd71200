"""The Bloch core against the tests' independent reference simulator and analytic recovery."""

from __future__ import annotations

import numpy as np
import pytest

from inference.bloch import BlochError, BssfpReadout, Inversion, T2Preparation, simulate_events
from tests.unit.inference.bloch_reference import simulate_bssfp_ir

T1_MS = np.array([250.0, 950.0, 1170.0, 1650.0, 2500.0])
T2_MS = np.array([60.0, 45.0, 50.0, 250.0, 200.0])


def molli_events(rr_ms=900.0, efficiency=0.96, flip=35.0, tr=2.7, n_pulses=66, centre=20):
    """MOLLI 5(3)3: centre pulses at 500 + beat x RR, inversions 100 and 180 ms before the sets' first images."""
    centres = [500.0 + beat * rr_ms for beat in (*range(5), *range(8, 11))]
    inversions = [centres[0] - 100.0, centres[5] - 180.0]
    offset = tr / 2 + centre * tr
    events = [BssfpReadout(c - offset, i, flip, tr, n_pulses, centre) for i, c in enumerate(centres)]
    events += [Inversion(t, efficiency) for t in inversions]
    return events, inversions, centres


def test_molli_signal_matches_the_reference_simulator():
    events, inversions, centres = molli_events()
    result = simulate_events(events, T1_MS, T2_MS)
    # The reference starts from equilibrium at time 0; the core at its first event, which is the first inversion.
    shift = inversions[0]
    reference = simulate_bssfp_ir(
        T1_MS, T2_MS, [t - shift for t in inversions], [c - shift for c in centres],
        flip_deg=35.0, tr_ms=2.7, n_pulses=66, centre_pulse=20, inversion_efficiency=0.96, signed=True,
    )
    np.testing.assert_allclose(result.signal, reference, rtol=0, atol=1e-12)
    assert result.signal.shape == (8, T1_MS.size)
    assert np.all(result.signal[0] < 0) and np.all(result.signal[4] > 0)


def test_t2_preparation_and_centric_readout_match_the_reference():
    preps = [(0.0, 0.0), (4000.0, 25.0), (8000.0, 55.0)]
    events = [BssfpReadout(start + prep, i, 70.0, 2.6, 60, 0) for i, (start, prep) in enumerate(preps)]
    events += [T2Preparation(start, prep) for start, prep in preps if prep > 0]
    result = simulate_events(events, T1_MS, T2_MS)
    reference = simulate_bssfp_ir(
        T1_MS, T2_MS, [], [start + prep + 1.3 for start, prep in preps], flip_deg=70.0, tr_ms=2.6, n_pulses=60,
        centre_pulse=0, t2_preparations=[p for p in preps if p[1] > 0], signed=True,
    )
    np.testing.assert_allclose(result.signal, reference, rtol=0, atol=1e-12)
    assert np.all(np.diff(result.signal[:, 1]) < 0)  # myocardium loses signal with longer preparation


def test_without_readout_pulses_mz_follows_the_analytic_inversion_recovery():
    events, inversions, centres = molli_events(flip=0.0)
    mz = simulate_events(events, T1_MS, T2_MS).mz_at_centre
    ti = np.array(centres[:5]) - inversions[0]
    expected = 1.0 - (1.0 + 0.96) * np.exp(-ti[:, None] / T1_MS)
    np.testing.assert_allclose(mz[:5], expected, atol=1e-12)


def test_event_order_given_does_not_matter_and_b1_scales_the_flip():
    events, _, _ = molli_events()
    shuffled = [events[i] for i in np.random.default_rng(1).permutation(len(events))]
    np.testing.assert_array_equal(simulate_events(events, T1_MS, T2_MS).signal,
                                  simulate_events(shuffled, T1_MS, T2_MS).signal)
    lower_b1 = simulate_events(events, T1_MS, T2_MS, b1_scale=0.8).signal
    smaller_flip = simulate_events(molli_events(flip=28.0)[0], T1_MS, T2_MS).signal
    np.testing.assert_allclose(lower_b1, smaller_flip, atol=1e-12)


@pytest.mark.parametrize(
    ("events", "t1", "message"),
    [
        ([BssfpReadout(0.0, 0, 35.0, 2.8, 70, 20), BssfpReadout(100.0, 1, 35.0, 2.8, 70, 20)], 1000.0, "overlap"),
        ([BssfpReadout(0.0, 1, 35.0, 2.8, 70, 20)], 1000.0, "number their images"),
        ([Inversion(0.0, 1.2), BssfpReadout(100.0, 0, 35.0, 2.8, 70, 20)], 1000.0, "efficiency"),
        ([BssfpReadout(0.0, 0, 35.0, 2.8, 70, 20)], -5.0, "positive"),
        ([BssfpReadout(0.0, 0, 35.0, 0.0, 70, 20)], 1000.0, "tr_ms"),
    ],
)
def test_unphysical_input_is_refused(events, t1, message):
    with pytest.raises(BlochError, match=message):
        simulate_events(events, t1, 45.0)
