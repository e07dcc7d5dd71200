"""On-resonance Bloch simulation of a mapping acquisition given as a time-ordered list of events.

Events are inversions (``Mz -> -efficiency * Mz``), T2 preparations (MLEV type: the magnetisation spends the
preparation in the transverse plane, ``Mz -> Mz exp(-duration / T2)``, no T1 recovery meanwhile) and single-shot
balanced SSFP readout trains. A train is an alpha/2 catalyst pulse with the phase opposite to the first alpha,
TR/2 of relaxation, then ``n_pulses`` pulses of alternating phase (+alpha, -alpha, ...) TR apart; transverse
magnetisation is spoiled after the train. On resonance the magnetisation stays in the y-z plane, so each pulse is a
rotation of (My, Mz) about x. The signal of an image is My at the echo (TR/2 after the pulse that reads the k-space
centre), demodulated by the alternating receiver phase: negative while Mz is negative, as phase-sensitive inversion
recovery sees it. M0 = 1. Between events Mz recovers freely with T1.

A train is linear in the magnetisation it starts from, so its effect is computed once per distinct readout and
reused for every image: ``Mz_after = a Mz_before + b``, ``signal = c Mz_before + d``, likewise Mz at the k-space
centre. Everything is vectorised over (T1, T2) pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inference.errors import AnalysisError

LOGGER = logging.getLogger(__name__)

_OVERLAP_TOLERANCE_MS = 1e-6


class BlochError(AnalysisError):
    """Relaxation times, readout parameters or the event timing are not physical."""


@dataclass(frozen=True)
class Inversion:
    """Adiabatic inversion at ``time_ms``: Mz -> -efficiency * Mz."""

    time_ms: float
    efficiency: float = 1.0


@dataclass(frozen=True)
class T2Preparation:
    """T2 preparation starting at ``time_ms`` and lasting ``duration_ms``."""

    time_ms: float
    duration_ms: float


@dataclass(frozen=True)
class BssfpReadout:
    """Single-shot bSSFP train for image ``image``, its catalyst pulse at ``time_ms``."""

    time_ms: float
    image: int
    flip_angle_deg: float
    tr_ms: float
    n_pulses: int
    centre_index: int  # pulse (0-based) whose echo samples the k-space centre

    @property
    def centre_offset_ms(self) -> float:
        """From the catalyst pulse to the RF pulse that reads the k-space centre."""
        return self.tr_ms / 2.0 + self.centre_index * self.tr_ms

    @property
    def duration_ms(self) -> float:
        return self.tr_ms / 2.0 + self.n_pulses * self.tr_ms


Event = Inversion | T2Preparation | BssfpReadout

# At equal times a preparation comes before the readout it prepares.
_EVENT_ORDER = {Inversion: 0, T2Preparation: 1, BssfpReadout: 2}


@dataclass(frozen=True)
class BlochResult:
    """Simulated values per image (rows, in image index order) and per (T1, T2) pair (columns).

    Attributes
    ----------
    signal
        (n_images, n_values) demodulated transverse magnetisation at the echo of the k-space centre.
    mz_at_centre
        (n_images, n_values) Mz just before the RF pulse that reads the k-space centre.
    """

    signal: np.ndarray
    mz_at_centre: np.ndarray


def relaxation_pairs(t1_ms: np.ndarray | float, t2_ms: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast T1 and T2 to one shape and flatten them, checking that they are positive and finite.

    Raises
    ------
    BlochError
        If a value is not positive and finite, or there are none.
    """
    t1, t2 = (np.asarray(a, dtype=np.float64).ravel() for a in np.broadcast_arrays(t1_ms, t2_ms))
    if t1.size == 0 or not (np.all(np.isfinite(t1)) and np.all(t1 > 0) and np.all(np.isfinite(t2)) and np.all(t2 > 0)):
        raise BlochError("t1_ms and t2_ms must be non-empty, positive and finite")
    return t1, t2


def simulate_events(
    events: Sequence[Event],
    t1_ms: np.ndarray | float,
    t2_ms: np.ndarray | float,
    *,
    b1_scale: float = 1.0,
) -> BlochResult:
    """Magnetisation of every (T1, T2) pair through ``events``, starting from equilibrium at the first event.

    Parameters
    ----------
    events
        Inversions, T2 preparations and readouts, in any order; they are sorted by time. Readout images must be
        numbered 0 .. n_images - 1, each once.
    t1_ms, t2_ms
        Relaxation times, broadcast to one shape and flattened into the output's columns.
    b1_scale
        Relative transmit field: scales the readout flip angles (adiabatic inversions are insensitive to it).

    Returns
    -------
    BlochResult

    Raises
    ------
    BlochError
        If a relaxation time or readout parameter is not physical, events overlap, or the images are not
        numbered 0 .. n - 1.
    """
    t1, t2 = relaxation_pairs(t1_ms, t2_ms)
    if not 0.0 < b1_scale < 3.0:
        raise BlochError(f"b1_scale must be in (0, 3), got {b1_scale}")
    ordered = sorted(events, key=lambda e: (e.time_ms, _EVENT_ORDER[type(e)]))
    readouts = [e for e in ordered if isinstance(e, BssfpReadout)]
    images = sorted(r.image for r in readouts)
    if not readouts or images != list(range(len(readouts))):
        raise BlochError(f"readouts must number their images 0 .. n - 1 once each, got {images}")
    trains: dict[tuple[float, float, int, int], _TrainResponse] = {}
    signal = np.zeros((len(readouts), t1.size))
    mz_at_centre = np.zeros_like(signal)
    mz = np.ones_like(t1)
    now = ordered[0].time_ms
    for event in ordered:
        if event.time_ms < now - _OVERLAP_TOLERANCE_MS:
            raise BlochError(
                f"events overlap: {type(event).__name__} at {event.time_ms:.1f} ms starts before {now:.1f} ms"
            )
        mz = 1.0 - (1.0 - mz) * np.exp(-(event.time_ms - now) / t1)
        now = event.time_ms
        if isinstance(event, Inversion):
            if not 0.0 <= event.efficiency <= 1.0:
                raise BlochError(f"inversion efficiency must be in [0, 1], got {event.efficiency}")
            mz = -event.efficiency * mz
        elif isinstance(event, T2Preparation):
            if not event.duration_ms >= 0.0:
                raise BlochError(f"T2 preparation duration_ms must be non-negative, got {event.duration_ms}")
            mz = mz * np.exp(-event.duration_ms / t2)
            now += event.duration_ms
        else:
            key = (event.flip_angle_deg, event.tr_ms, event.n_pulses, event.centre_index)
            if key not in trains:
                trains[key] = _train_response(event, t1, t2, b1_scale)
            train = trains[key]
            signal[event.image] = train.signal_slope * mz + train.signal_offset
            mz_at_centre[event.image] = train.centre_slope * mz + train.centre_offset
            mz = train.end_slope * mz + train.end_offset
            now += event.duration_ms
    return BlochResult(signal=signal, mz_at_centre=mz_at_centre)


@dataclass(frozen=True)
class _TrainResponse:
    """Affine response of one readout train to the Mz it starts from, per (T1, T2) pair."""

    signal_slope: np.ndarray
    signal_offset: np.ndarray
    centre_slope: np.ndarray
    centre_offset: np.ndarray
    end_slope: np.ndarray
    end_offset: np.ndarray


def _train_response(readout: BssfpReadout, t1: np.ndarray, t2: np.ndarray, b1_scale: float) -> _TrainResponse:
    """Run the train from Mz = 0 and Mz = 1 side by side and read off the affine response."""
    flip, tr, n_pulses = float(readout.flip_angle_deg), float(readout.tr_ms), int(readout.n_pulses)
    if not (0.0 <= flip <= 180.0 and tr > 0 and n_pulses >= 1 and readout.centre_index >= 0):
        raise BlochError(
            f"readout needs flip in [0, 180] deg, tr_ms > 0, n_pulses >= 1 and centre_index >= 0; "
            f"got {flip}, {tr}, {n_pulses}, {readout.centre_index}"
        )
    centre = min(int(readout.centre_index), n_pulses - 1)
    alpha = np.radians(flip * b1_scale)
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    cos_h, sin_h = np.cos(alpha / 2.0), np.sin(alpha / 2.0)
    t1_pair, t2_pair = np.concatenate([t1, t1]), np.concatenate([t2, t2])
    e1_tr, e2_tr = np.exp(-tr / t1_pair), np.exp(-tr / t2_pair)
    e1_half, e2_half = np.exp(-tr / 2.0 / t1_pair), np.exp(-tr / 2.0 / t2_pair)
    mz = np.concatenate([np.zeros_like(t1), np.ones_like(t1)])
    # alpha/2 catalyst with the phase opposite to the first alpha, then TR/2 to the first alpha.
    my = -sin_h * mz
    mz = cos_h * mz
    my, mz = my * e2_half, 1.0 - (1.0 - mz) * e1_half
    signal = mz_centre = mz
    for pulse in range(n_pulses):
        sign = 1.0 if pulse % 2 == 0 else -1.0
        if pulse == centre:
            mz_centre = mz
        my, mz = my * cos_a + sign * mz * sin_a, mz * cos_a - sign * my * sin_a
        if pulse == centre:
            signal = sign * my * e2_half
        my, mz = my * e2_tr, 1.0 - (1.0 - mz) * e1_tr
    n = t1.size
    return _TrainResponse(
        signal_slope=signal[n:] - signal[:n],
        signal_offset=signal[:n],
        centre_slope=mz_centre[n:] - mz_centre[:n],
        centre_offset=mz_centre[:n],
        end_slope=mz[n:] - mz[:n],
        end_offset=mz[:n],
    )
