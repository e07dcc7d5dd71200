"""Reference Bloch simulator for the tests, written independently of :mod:`inference.bloch`.

It keeps the full magnetisation vector (Mx, My, Mz), applies every RF pulse as a 3 x 3 rotation matrix about x,
relaxes with T1 and T2 between pulses, and walks the events one at a time: inversions (Mz -> -efficiency Mz,
transverse magnetisation destroyed), MLEV-type T2 preparations (Mz -> Mz exp(-duration / T2)), and bSSFP readouts
(alpha/2 catalyst with the phase opposite to the first alpha, TR/2 later ``n_pulses`` pulses of alternating phase
TR apart, spoiled after the train). The signal of a readout is the transverse magnetisation at the echo TR/2 after
the pulse reading the k-space centre, demodulated by the alternating receiver phase, so it is negative while Mz is
negative. M0 = 1, equilibrium at time 0.
"""

from __future__ import annotations

import numpy as np


def _rotation_x(angle_rad: float) -> np.ndarray:
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def simulate_bssfp_ir(
    t1_ms: np.ndarray | float,
    t2_ms: np.ndarray | float,
    inversion_at_ms: list[float],
    readout_centre_at_ms: list[float],
    *,
    flip_deg: float = 35.0,
    tr_ms: float = 2.8,
    n_pulses: int = 70,
    centre_pulse: int | None = None,
    inversion_efficiency: float = 1.0,
    t2_preparations: list[tuple[float, float]] = (),
    signed: bool = False,
) -> np.ndarray:
    """Signal at the k-space centre of each readout, shape (readouts in time order, tissues).

    Parameters
    ----------
    t1_ms, t2_ms
        Tissues (broadcast together).
    inversion_at_ms
        Times of the inversion pulses.
    readout_centre_at_ms
        Time of the RF pulse that reads the k-space centre, per readout.
    flip_deg, tr_ms, n_pulses, centre_pulse
        bSSFP train; the centre pulse defaults to the middle one.
    inversion_efficiency
        Mz -> -efficiency Mz at each inversion.
    t2_preparations
        (start, duration) of T2 preparations.
    signed
        Return the demodulated signal with its sign instead of the magnitude.
    """
    t1 = np.atleast_1d(np.asarray(t1_ms, dtype=float))
    t2 = np.broadcast_to(np.asarray(t2_ms, dtype=float), t1.shape)
    t1 = np.broadcast_to(t1, t2.shape)
    centre = n_pulses // 2 if centre_pulse is None else centre_pulse
    m = np.zeros((3, t1.size))
    m[2] = 1.0
    clock = 0.0
    alpha = np.deg2rad(flip_deg)

    def relax(dt_ms: float) -> None:
        nonlocal clock
        if dt_ms < -1e-9:
            raise ValueError(f"events overlap by {-dt_ms} ms")
        m[:2] *= np.exp(-dt_ms / t2)
        m[2] = 1.0 - (1.0 - m[2]) * np.exp(-dt_ms / t1)
        clock += dt_ms

    events = sorted(
        [(t, 0, 0.0) for t in inversion_at_ms]
        + [(t, 1, d) for t, d in t2_preparations]
        + [(t - tr_ms / 2 - centre * tr_ms, 2, 0.0) for t in readout_centre_at_ms]
    )
    signals = []
    for at_ms, kind, duration_ms in events:
        relax(at_ms - clock)
        if kind == 0:
            m[:2] = 0.0
            m[2] = -inversion_efficiency * m[2]
            continue
        if kind == 1:
            m[2] = m[2] * np.exp(-duration_ms / t2)
            m[:2] = 0.0
            clock += duration_ms
            continue
        m[:] = _rotation_x(-alpha / 2) @ m
        relax(tr_ms / 2)
        for pulse in range(n_pulses):
            sign = 1.0 if pulse % 2 == 0 else -1.0
            m[:] = _rotation_x(sign * alpha) @ m
            relax(tr_ms / 2)
            if pulse == centre:
                value = sign * m[1] if signed else np.hypot(m[0], m[1])
                signals.append(value.copy())
            relax(tr_ms / 2)
        m[:2] = 0.0  # spoiled after the train
    return np.array(signals)
