"""Bloch simulation of a mapping scheme: magnetisation through every inversion, preparation, readout and recovery.

On resonance, so the magnetisation stays in the y-z plane: RF pulses about x with alternating phase (+alpha,
-alpha, ...) rotate (My, Mz), relaxation acts between events, and the transverse magnetisation is spoiled after each
readout train. The recorded signal of an image is My at the echo (TE after the RF pulse that reads the k-space
centre), demodulated by the alternating receiver phase; it is negative while Mz is negative, as in phase-sensitive
inversion recovery. M0 = 1; proton density and coil gain are applied later (:mod:`phantom.acquisition`).

This reproduces the known behaviour of the schemes: the bSSFP readouts perturb the recovery (apparent T1* shorter
than the ideal Look-Locker value), so a 3-parameter fit with the Look-Locker correction under-reads long T1 in MOLLI,
more so at high heart rates; and in ShMOLLI the sets after a single recovery beat start from incompletely recovered
magnetisation when T1 is long, which is why ShMOLLI fits them only conditionally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from phantom.schemes import Scheme

LOGGER = logging.getLogger(__name__)


class BlochError(ValueError):
    """Relaxation times or readout parameters are not physical."""


@dataclass(frozen=True)
class _Event:
    time_ms: float
    kind: str  # "inversion", "t2prep", "readout"
    image: int = -1  # image index for readouts
    duration_ms: float = 0.0  # T2 preparation length


def simulate_signal(
    scheme: Scheme,
    t1_ms: np.ndarray,
    t2_ms: np.ndarray,
    *,
    flip_angle_deg: float | None = None,
    tr_ms: float | None = None,
    n_readout: int | None = None,
    b1_scale: float = 1.0,
) -> np.ndarray:
    """Signal at the k-space centre of every image, for every (T1, T2) pair.

    Parameters
    ----------
    scheme
        Timing of the acquisition.
    t1_ms, t2_ms
        Relaxation times, broadcast to one shape (the pairs); flattened in the output.
    flip_angle_deg, tr_ms, n_readout
        Readout parameters; the scheme's own when not given.
    b1_scale
        Relative transmit field: scales the readout flip angles (the adiabatic inversion is insensitive to it).

    Returns
    -------
    np.ndarray
        (n_images, n_values) complex128; the imaginary part is zero (phase is added by the image formation).

    Raises
    ------
    BlochError
        If a relaxation time or readout parameter is not positive and finite.
    """
    signal, _ = _simulate(scheme, t1_ms, t2_ms, flip_angle_deg, tr_ms, n_readout, b1_scale)
    return signal.astype(np.complex128)


def simulate_longitudinal(
    scheme: Scheme,
    t1_ms: np.ndarray,
    t2_ms: np.ndarray,
    *,
    flip_angle_deg: float | None = None,
    tr_ms: float | None = None,
    n_readout: int | None = None,
    b1_scale: float = 1.0,
) -> np.ndarray:
    """Mz just before the RF pulse that reads the k-space centre of each image, (n_images, n_values)."""
    _, mz = _simulate(scheme, t1_ms, t2_ms, flip_angle_deg, tr_ms, n_readout, b1_scale)
    return mz


def _simulate(
    scheme: Scheme,
    t1_ms: np.ndarray,
    t2_ms: np.ndarray,
    flip_angle_deg: float | None,
    tr_ms: float | None,
    n_readout: int | None,
    b1_scale: float,
) -> tuple[np.ndarray, np.ndarray]:
    t1, t2 = (np.asarray(a, dtype=np.float64).ravel() for a in np.broadcast_arrays(t1_ms, t2_ms))
    if t1.size == 0 or not (np.all(np.isfinite(t1)) and np.all(t1 > 0) and np.all(np.isfinite(t2)) and np.all(t2 > 0)):
        raise BlochError("t1_ms and t2_ms must be non-empty, positive and finite")
    readout = scheme.readout
    flip = readout.flip_angle_deg if flip_angle_deg is None else float(flip_angle_deg)
    tr = readout.tr_ms if tr_ms is None else float(tr_ms)
    n_pulses = readout.n_readout if n_readout is None else int(n_readout)
    centre = min(readout.centre_index, n_pulses - 1)
    if not (0.0 <= flip <= 180.0 and tr > 0 and n_pulses >= 1 and 0.0 < b1_scale < 3.0):
        raise BlochError(
            f"readout needs flip in [0, 180] deg, tr_ms > 0, n_readout >= 1, b1_scale in (0, 3); "
            f"got {flip}, {tr}, {n_pulses}, {b1_scale}"
        )
    alpha = np.radians(flip * b1_scale)
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    cos_h, sin_h = np.cos(alpha / 2.0), np.sin(alpha / 2.0)
    e1_tr, e2_tr = np.exp(-tr / t1), np.exp(-tr / t2)
    e1_half, e2_half = np.exp(-tr / 2.0 / t1), np.exp(-tr / 2.0 / t2)
    centre_offset = tr / 2.0 + centre * tr
    train_ms = tr / 2.0 + n_pulses * tr

    events = _events(scheme, centre_offset)
    n_images = scheme.n_images
    signal = np.zeros((n_images, t1.size))
    mz_at_centre = np.zeros((n_images, t1.size))
    mz = np.ones_like(t1)
    now = events[0].time_ms
    for event in events:
        if event.time_ms < now - 1e-6:
            raise BlochError(f"events overlap: {event.kind} at {event.time_ms:.1f} ms starts before {now:.1f} ms")
        mz = 1.0 - (1.0 - mz) * np.exp(-(event.time_ms - now) / t1)
        now = event.time_ms
        if event.kind == "inversion":
            mz = -scheme.inversion_efficiency * mz
        elif event.kind == "t2prep":
            # MLEV-type preparation: magnetisation spends the preparation in the transverse plane (T2 decay only)
            # and is restored to +z.
            mz = mz * np.exp(-event.duration_ms / t2)
            now += event.duration_ms
        else:
            # alpha/2 catalyst with the phase opposite to the first alpha, then the alternating train.
            my = -sin_h * mz
            mz = cos_h * mz
            my, mz = my * e2_half, 1.0 - (1.0 - mz) * e1_half
            for pulse in range(n_pulses):
                sign = 1.0 if pulse % 2 == 0 else -1.0
                if pulse == centre:
                    mz_at_centre[event.image] = mz
                my, mz = my * cos_a + sign * mz * sin_a, mz * cos_a - sign * my * sin_a
                if pulse == centre:
                    signal[event.image] = sign * my * e2_half
                my, mz = my * e2_tr, 1.0 - (1.0 - mz) * e1_tr
            now += train_ms
            # Spoiled before the next event.
    return signal, mz_at_centre


def _events(scheme: Scheme, centre_offset_ms: float) -> list[_Event]:
    """Inversions, T2 preparations and readouts in time order."""
    starts = scheme.readout_start_times_ms
    events = [_Event(float(t), "readout", image=i) for i, t in enumerate(starts)]
    if scheme.is_inversion_recovery:
        # Inversions are placed so that the first image of each set has the set's minimum TI at the k-space centre.
        firsts = np.cumsum([0] + [s.n_images for s in scheme.sets[:-1]])
        for first, inversion_set in zip(firsts, scheme.sets, strict=True):
            time = starts[first] + centre_offset_ms - inversion_set.minimum_ti_ms
            events.append(_Event(float(time), "inversion"))
    else:
        for image, prep_ms in enumerate(scheme.t2_prep_ms):  # type: ignore[arg-type]
            if prep_ms > 0:
                events.append(_Event(float(starts[image] - prep_ms), "t2prep", duration_ms=float(prep_ms)))
    # At equal times the preparation comes before the readout it prepares.
    order = {"inversion": 0, "t2prep": 1, "readout": 2}
    return sorted(events, key=lambda e: (e.time_ms, order[e.kind]))
