"""Bloch-simulation correction of plain MOLLI and ShMOLLI T1, checked on the reference simulator's signals."""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import ShapeMismatchError
from inference.mapping import MappingScheme, T1Correction, reconstruct_map
from inference.molli_correction import (
    AssumedT2,
    MolliProtocol,
    PlainFit,
    ProtocolError,
    correct_t1,
    correction_curve,
    protocol_from_tags,
)
from inference.shmolli import fit_t1_shmolli
from inference.t1_fit import fit_t1_molli
from tests.unit.inference.bloch_reference import simulate_bssfp_ir

RR_MS = 900.0
TR_MS, N_PULSES, CENTRE = 2.8, 70, 23


def molli_protocol(beat_ms=RR_MS, **changes) -> MolliProtocol:
    beats = (*range(5), *range(8, 11))
    ti = [100.0 + b * beat_ms for b in range(5)] + [180.0 + b * beat_ms for b in range(3)]
    values = dict(
        inversion_times_ms=ti, image_times_ms=[b * beat_ms for b in beats], rr_ms=beat_ms, readout_tr_ms=TR_MS,
        n_readout=N_PULSES, centre_index=CENTRE,
    )
    values.update(changes)
    return MolliProtocol(**values)


def shmolli_protocol(rr_ms=RR_MS) -> MolliProtocol:
    beats = (0, 1, 2, 3, 4, 6, 8)
    ti = [100.0 + b * rr_ms for b in range(5)] + [180.0, 260.0]
    return MolliProtocol(
        inversion_times_ms=ti, image_times_ms=[b * rr_ms for b in beats], rr_ms=rr_ms, readout_tr_ms=TR_MS,
        n_readout=N_PULSES, centre_index=CENTRE, fit=PlainFit.SHMOLLI,
    )


def reference_signal(protocol: MolliProtocol, t1_ms, t2_ms, efficiency=0.96) -> np.ndarray:
    """Magnitudes of the protocol's images by the independent reference simulator (acquisition order)."""
    centres = 1000.0 + np.array(protocol.image_times_ms)
    ti = np.array(protocol.inversion_times_ms)
    inversions = sorted({round(c - t, 6) for c, t in zip(centres, ti, strict=True)})
    return simulate_bssfp_ir(
        t1_ms, t2_ms, inversions, list(centres), flip_deg=protocol.flip_angle_deg, tr_ms=protocol.readout_tr_ms,
        n_pulses=protocol.n_readout, centre_pulse=protocol.centre_index, inversion_efficiency=efficiency,
    )


def test_curve_shows_molli_under_reading_myocardium_by_the_published_amount():
    true_ms, plain_ms = correction_curve(molli_protocol())
    assert np.all(np.diff(plain_ms) > 0) and np.all(np.diff(true_ms) > 0)
    ratio = np.interp(1170.0, true_ms, plain_ms) / 1170.0 - 1.0
    assert -0.15 < ratio < -0.05  # myocardium-like T2: MOLLI reads 5-15 % low (Kellman and Hansen 2014)
    blood = np.interp(1650.0, true_ms, plain_ms) / 1650.0 - 1.0
    assert ratio < blood < 0.0  # blood's long T2 makes the readout disturb its recovery less


@pytest.mark.parametrize("rr_ms", [600.0, 1000.0])
def test_correction_recovers_true_t1_of_independently_simulated_molli(rr_ms):
    protocol = molli_protocol(rr_ms)
    t1_ms = np.array([350.0, 800.0, 1170.0, 1400.0, 1650.0, 2200.0])
    t2_ms = protocol.assumed_t2.t2_ms(t1_ms)
    plain = fit_t1_molli(reference_signal(protocol, t1_ms, t2_ms), protocol.inversion_times_ms).t1_ms
    corrected = correct_t1(plain, protocol)
    assert np.all(plain / t1_ms - 1.0 < -0.02)
    np.testing.assert_allclose(corrected, t1_ms, rtol=0.005)


def test_a_t2_map_replaces_the_assumed_t2():
    protocol = molli_protocol()
    t1_ms, t2_ms = np.array([1170.0, 1170.0]), np.array([50.0, 120.0])  # myocardium, and oedema-like T2
    plain = fit_t1_molli(reference_signal(protocol, t1_ms, t2_ms), protocol.inversion_times_ms).t1_ms
    with_map = correct_t1(plain, protocol, t2_ms=t2_ms)
    assumed = correct_t1(plain, protocol)
    np.testing.assert_allclose(with_map, t1_ms, rtol=0.01)
    assert assumed[1] > 1.02 * t1_ms[1]  # the heuristic's 50 ms over-corrects a long-T2 tissue
    partial = correct_t1(plain, protocol, t2_ms=np.array([np.nan, 120.0]))
    assert partial[0] == pytest.approx(assumed[0]) and partial[1] == pytest.approx(with_map[1])


def test_shmolli_pixels_are_corrected_with_the_curve_of_the_samples_their_fit_kept():
    protocol = shmolli_protocol()
    t1_ms = np.array([300.0, 700.0, 1170.0, 1650.0])
    t2_ms = protocol.assumed_t2.t2_ms(t1_ms)
    signal = reference_signal(protocol, t1_ms, t2_ms)
    fit = fit_t1_shmolli(signal, protocol.inversion_times_ms, rr_ms=RR_MS, inversion_index=protocol.inversion_index)
    assert fit.samples_used.tolist() == [7, 6, 5, 5]
    corrected = correct_t1(fit.t1_ms, protocol, samples_used=fit.samples_used)
    np.testing.assert_allclose(corrected, t1_ms, rtol=0.01)


def test_nan_stays_nan_and_shapes_must_agree():
    protocol = molli_protocol()
    out = correct_t1(np.array([[np.nan, 1000.0], [0.0, 1500.0]]), protocol)
    assert np.isnan(out[0, 0]) and np.isnan(out[1, 0]) and out[0, 1] > 1000.0
    with pytest.raises(ShapeMismatchError):
        correct_t1(np.ones((2, 2)), protocol, t2_ms=np.ones(4))


def test_protocol_from_tags_lays_out_molli_and_shmolli_by_heartbeat_without_acquisition_times():
    rr = 800.0
    molli_ti = [180.0 + rr, 100.0, 100.0 + rr, 180.0, 100.0 + 2 * rr, 180.0 + 2 * rr, 100.0 + 3 * rr, 100.0 + 4 * rr]
    protocol = protocol_from_tags(molli_ti, rr_ms=rr, flip_angle_deg=35.0, repetition_time_ms=2.6)
    assert protocol.image_times_ms == tuple(b * rr for b in (0, 1, 2, 3, 4, 8, 9, 10))
    assert protocol.inversion_times_ms[0] == 100.0 and protocol.inversion_index.tolist() == [0] * 5 + [1] * 3
    assert protocol.readout_tr_ms == 2.6 and protocol.n_readout == 70
    shmolli_ti = [100.0, 180.0, 260.0] + [100.0 + k * rr for k in range(1, 5)]
    shmolli = protocol_from_tags(shmolli_ti, fit="shmolli", heart_rate_bpm=60000.0 / rr)
    assert shmolli.image_times_ms == tuple(b * rr for b in (0, 1, 2, 3, 4, 6, 8))
    assert shmolli.inversion_index.tolist() == [0, 0, 0, 0, 0, 1, 2]
    # 5s(3s)3s at RR 600: 9 images in the first set, then ceil(3 s / RR) = 5 recovery beats.
    long_ti = [100.0 + k * 600.0 for k in range(9)] + [180.0 + k * 600.0 for k in range(5)]
    assert protocol_from_tags(long_ti, rr_ms=600.0).image_times_ms[9] == 14 * 600.0


def test_protocol_from_tags_uses_acquisition_times_matrix_and_field():
    rr = 1000.0
    times_s = 36000.0 + np.array([0, 1, 2, 3, 4, 8, 9, 10]) * rr / 1000.0 + np.array([0, 3, -2, 5, 1, 0, 2, -4]) / 1e3
    ti = [100.0 + k * rr for k in range(5)] + [180.0 + k * rr for k in range(3)]
    order = np.random.default_rng(0).permutation(8)
    protocol = protocol_from_tags(
        np.array(ti)[order], rr_ms=rr, acquisition_times_s=times_s[order], repetition_time_ms=300.0,
        phase_encoding_lines=144, field_strength_t=3.0,
    )
    assert protocol.inversion_times_ms == tuple(ti)
    assert protocol.image_times_ms[1] == pytest.approx(1003.0)
    assert protocol.readout_tr_ms == 2.8  # 300 ms is not a bSSFP echo spacing
    assert (protocol.n_readout, protocol.centre_index) == (54, 18)  # 144 / 2 x 6/8; 144 / 2 x 2/8
    assert protocol.assumed_t2 == AssumedT2.for_field(3.0) != AssumedT2.for_field(1.5)
    with pytest.raises(ProtocolError, match="RR interval"):
        protocol_from_tags(ti)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"inversion_times_ms": [30.0] + [100.0] * 7}, "inside the readout"),
        ({"image_times_ms": [0.0] * 8}, "increase"),
        ({"rr_ms": 50.0}, "rr_ms"),
        ({"inversion_efficiency": 1.2}, "inversion_efficiency"),
        ({"centre_index": 70}, "centre_index"),
        ({"image_times_ms": [0.0, 900.0]}, "one entry per image"),
    ],
)
def test_inconsistent_protocols_are_refused(changes, message):
    with pytest.raises(ProtocolError, match=message):
        molli_protocol(**changes)


def test_reconstruct_map_applies_and_records_the_correction():
    protocol = molli_protocol()
    t1_ms = np.array([900.0, 1170.0, 1650.0])
    signal = reference_signal(protocol, t1_ms, protocol.assumed_t2.t2_ms(t1_ms))
    ti = np.array(protocol.inversion_times_ms)
    corrected = reconstruct_map(signal, ti, "molli", protocol=protocol)
    plain = reconstruct_map(signal, ti, MappingScheme.MOLLI, protocol=protocol, correction="none")
    unknown = reconstruct_map(signal, ti, "molli")
    assert corrected.correction is T1Correction.BLOCH and corrected.method.endswith("Bloch correction")
    assert plain.correction is unknown.correction is T1Correction.NONE
    assert plain.method == unknown.method == "MOLLI 3-parameter + Look-Locker"
    np.testing.assert_allclose(corrected.map_ms, t1_ms, rtol=0.005)
    np.testing.assert_array_equal(plain.map_ms, unknown.map_ms)
    assert np.all(plain.map_ms < 0.97 * t1_ms)
    with pytest.raises(ProtocolError, match="shmolli"):
        reconstruct_map(signal, ti, "molli", protocol=shmolli_protocol())
    with pytest.raises(ProtocolError, match="inversion times"):
        reconstruct_map(signal, ti + 20.0, "molli", protocol=protocol)


def test_reconstruct_map_shmolli_takes_the_rr_interval_from_the_protocol():
    protocol = shmolli_protocol()
    t1_ms = np.array([1170.0, 1650.0])
    signal = reference_signal(protocol, t1_ms, protocol.assumed_t2.t2_ms(t1_ms))
    result = reconstruct_map(signal, protocol.inversion_times_ms, "shmolli", protocol=protocol)
    assert result.method == "ShMOLLI conditional + Bloch correction"
    np.testing.assert_allclose(result.map_ms, t1_ms, rtol=0.01)
