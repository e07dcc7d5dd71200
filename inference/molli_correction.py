"""Bloch-simulation correction of the T1 that a plain MOLLI or ShMOLLI fit reads.

The three-parameter fit with the Look-Locker correction (:mod:`inference.t1_fit`) assumes that the readouts
perturb the recovery like a continuous spoiled readout. The bSSFP trains of MOLLI also drive the magnetisation
with T2, the inversion is not perfect, and the recovery between inversion sets is incomplete, so the fit
under-reads T1: by about 5-12 % in myocardium (T2 about 45 ms) and a few percent in blood (Kellman and Hansen,
JCMR 2014;16:2; Roujol et al., Radiology 2014;272:683-689). The error depends on the protocol and on T1 and T2,
and a Bloch simulation of the protocol predicts it (Gai et al., MRM 2013;69:329-336).

The correction, per protocol:

1. simulate the protocol (:mod:`inference.bloch`) on a dense grid of true T1 with an assumed T2 and the assumed
   inversion efficiency;
2. fit every noiseless simulated signal with the same plain fit the node uses (:func:`fit_t1_molli`, or the
   first-inversion subsets of the ShMOLLI conditional fit), giving the plain T1 each true T1 reads as;
3. invert this monotone curve per pixel by interpolation: plain T1 -> true T1.

T2 is not known per pixel in a T1 map. Unless a T2 map of the slice is given, T2 is assumed from T1 along the
curve (:class:`AssumedT2`): myocardium-like (45 ms) up to tissue-range T1, blood-like (250 ms at 1.5 T, 200 ms at
3 T) from blood-range T1, with a smooth transition between. This is a heuristic: tissue with blood-range T1 but
short T2 (or the reverse) is corrected as the heuristic's tissue would be. With a T2 map, the correction is
interpolated between curves simulated on a T2 grid. ShMOLLI pixels are corrected with the curve of the samples
their conditional fit kept (5, 6 or 7).

Curves are cached per protocol; once cached, correcting a slice is a few interpolations.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

import numpy as np

from inference.bloch import BssfpReadout, Event, Inversion, simulate_events
from inference.errors import AnalysisError, ShapeMismatchError
from inference.t1_fit import fit_ir_pixels, fit_t1_molli

LOGGER = logging.getLogger(__name__)

#: Inversion efficiency the correction assumes: adiabatic inversions in vivo reach about 0.95-0.98 (Kellman and
#: Hansen 2014); the true value varies with B1 and off-resonance and is not known per pixel.
DEFAULT_INVERSION_EFFICIENCY = 0.96
#: Readout defaults where the tags do not say: bSSFP at 35 deg, TR 2.8 ms (MOLLI and ShMOLLI products).
DEFAULT_FLIP_ANGLE_DEG = 35.0
DEFAULT_READOUT_TR_MS = 2.8
#: Pulses per image where the acquisition matrix is not known: a typical single-shot MOLLI image.
DEFAULT_READOUT_PULSES = 70
#: Undersampling assumed on top of the acquired phase-encoding lines: parallel imaging x2 and 6/8 partial
#: Fourier (linear ordering, the omitted lines at the start of the train), as common MOLLI protocols use.
DEFAULT_PARALLEL_FACTOR = 2.0
DEFAULT_PARTIAL_FOURIER = 0.75
#: A DICOM RepetitionTime outside this range is not the bSSFP echo spacing (some vendors store the time between
#: images there) and is replaced by :data:`DEFAULT_READOUT_TR_MS`.
READOUT_TR_RANGE_MS = (1.5, 6.0)

#: Images whose inversion pulse, k-space centre time minus TI, falls within this of another's follow the same
#: inversion (absorbs the beat-to-beat variation of the heart rate).
_SAME_INVERSION_TOLERANCE_MS = 60.0
_T1_GRID_MS = np.geomspace(60.0, 6000.0, 401)  # true T1 of the curves, 1.2 % apart
_T2_GRID_MS = np.geomspace(15.0, 600.0, 14)  # T2 nodes when a T2 map is given
_T1_MAX_MS = 8000.0  # fits of the grid may read past the node's 4000 ms validity limit; keep them for the curve


class ProtocolError(AnalysisError):
    """The acquisition protocol is incomplete, inconsistent or not one the correction can simulate."""


class PlainFit(str, Enum):
    """The plain fit whose bias is corrected."""

    MOLLI = "molli"  # three-parameter + Look-Locker over all images
    SHMOLLI = "shmolli"  # conditional use of the second and third inversion


@dataclass(frozen=True)
class AssumedT2:
    """T2 assumed for a T1: tissue-like below ``transition_t1_ms[0]``, blood-like above ``transition_t1_ms[1]``.

    Between the two, log T2 follows a smoothstep in log T1. The T1 is the true T1 along the correction curve
    (plain and true T1 are one-to-one there).
    """

    tissue_t2_ms: float = 45.0
    blood_t2_ms: float = 250.0
    transition_t1_ms: tuple[float, float] = (1350.0, 1650.0)

    def __post_init__(self) -> None:
        low, high = self.transition_t1_ms
        if not (self.tissue_t2_ms > 0 and self.blood_t2_ms > 0 and 0 < low < high):
            raise ProtocolError(
                f"assumed T2 needs positive T2s and 0 < transition start < end, got {self.tissue_t2_ms}, "
                f"{self.blood_t2_ms}, {self.transition_t1_ms}"
            )

    @classmethod
    def for_field(cls, field_strength_t: float | None) -> AssumedT2:
        """Heuristic for the field strength: at 3 T both T1s are longer and blood T2 shorter.

        1.5 T (and unknown): myocardium T1 about 1170 ms and T2 about 50 ms, blood T1 about 1650 ms; 3 T: about
        1520 ms and 45 ms, blood about 2000 ms with T2 about 200 ms (docs/mapping.md). The transition sits
        between raised-T1 myocardium and blood.
        """
        if field_strength_t is not None and field_strength_t > 2.0:
            return cls(tissue_t2_ms=45.0, blood_t2_ms=200.0, transition_t1_ms=(1750.0, 1980.0))
        return cls(tissue_t2_ms=50.0, blood_t2_ms=250.0, transition_t1_ms=(1400.0, 1620.0))

    def t2_ms(self, t1_ms: np.ndarray) -> np.ndarray:
        """Assumed T2 of each T1."""
        low, high = (math.log(v) for v in self.transition_t1_ms)
        x = np.clip((np.log(np.asarray(t1_ms, dtype=np.float64)) - low) / (high - low), 0.0, 1.0)
        weight = x * x * (3.0 - 2.0 * x)
        return np.exp((1.0 - weight) * math.log(self.tissue_t2_ms) + weight * math.log(self.blood_t2_ms))


@dataclass(frozen=True)
class MolliProtocol:
    """What the correction simulates: per-image timing in acquisition order, the readout, the inversion.

    Attributes
    ----------
    inversion_times_ms
        Effective TI of each image (inversion to the k-space centre), acquisition order.
    image_times_ms
        Time of each image's k-space centre relative to the first image, acquisition order (from the
        acquisition times, or heartbeat index x RR).
    rr_ms
        RR interval (the ShMOLLI conditional fit's thresholds scale with it).
    flip_angle_deg, readout_tr_ms, n_readout, centre_index
        bSSFP readout: flip angle, echo spacing, pulses per image, and the pulse (0-based) reading the k-space
        centre.
    inversion_efficiency
        Assumed inversion efficiency (:data:`DEFAULT_INVERSION_EFFICIENCY`).
    assumed_t2
        T2 assumed where no T2 map is given.
    fit
        The plain fit the map came from.
    """

    inversion_times_ms: tuple[float, ...]
    image_times_ms: tuple[float, ...]
    rr_ms: float
    flip_angle_deg: float = DEFAULT_FLIP_ANGLE_DEG
    readout_tr_ms: float = DEFAULT_READOUT_TR_MS
    n_readout: int = DEFAULT_READOUT_PULSES
    centre_index: int = round(DEFAULT_READOUT_PULSES * (1.0 - 0.5 / DEFAULT_PARTIAL_FOURIER))
    inversion_efficiency: float = DEFAULT_INVERSION_EFFICIENCY
    assumed_t2: AssumedT2 = field(default_factory=AssumedT2)
    fit: PlainFit = PlainFit.MOLLI

    def __post_init__(self) -> None:
        object.__setattr__(self, "inversion_times_ms", tuple(float(t) for t in self.inversion_times_ms))
        object.__setattr__(self, "image_times_ms", tuple(float(t) for t in self.image_times_ms))
        object.__setattr__(self, "fit", PlainFit(self.fit))
        ti, times = np.array(self.inversion_times_ms), np.array(self.image_times_ms)
        if ti.size != times.size or ti.size < 4:
            raise ProtocolError(
                f"inversion_times_ms and image_times_ms need one entry per image (at least 4), got {ti.size} "
                f"and {times.size}"
            )
        if not (np.all(np.isfinite(ti)) and np.all(ti >= 0) and np.all(np.isfinite(times))):
            raise ProtocolError(f"timings must be finite and TIs non-negative, got {ti.tolist()}, {times.tolist()}")
        if np.any(np.diff(times) <= self.readout_tr_ms * self.n_readout):
            raise ProtocolError(f"image_times_ms must increase by more than one readout, got {times.tolist()}")
        if not (np.isfinite(self.rr_ms) and 200.0 <= self.rr_ms <= 3000.0):
            raise ProtocolError(f"rr_ms must be in [200, 3000], got {self.rr_ms}")
        if not (0.0 < self.flip_angle_deg <= 90.0 and self.readout_tr_ms > 0 and self.n_readout >= 1):
            raise ProtocolError(
                f"readout needs flip in (0, 90] deg, readout_tr_ms > 0 and n_readout >= 1, got "
                f"{self.flip_angle_deg}, {self.readout_tr_ms}, {self.n_readout}"
            )
        if not 0 <= self.centre_index < self.n_readout:
            raise ProtocolError(f"centre_index must be in [0, {self.n_readout}), got {self.centre_index}")
        if not 0.5 <= self.inversion_efficiency <= 1.0:
            raise ProtocolError(f"inversion_efficiency must be in [0.5, 1], got {self.inversion_efficiency}")
        centre_offset_ms = self.readout_tr_ms * (0.5 + self.centre_index)
        if ti.min() < centre_offset_ms:
            raise ProtocolError(
                f"the shortest TI ({ti.min():g} ms) is shorter than the readout before the k-space centre "
                f"({centre_offset_ms:g} ms): the inversion would fall inside the readout"
            )
        index = self.inversion_index
        if self.fit is PlainFit.SHMOLLI and (index.max() > 2 or np.sum(index == 0) < 4):
            raise ProtocolError(
                f"ShMOLLI needs at most 3 inversions and 4 or more images after the first, got inversions "
                f"{index.tolist()}"
            )

    @property
    def inversion_index(self) -> np.ndarray:
        """Which inversion (0, 1, ...) each image follows, from when its inversion pulse must have been."""
        pulses = np.array(self.image_times_ms) - np.array(self.inversion_times_ms)
        index = np.full(pulses.size, -1, dtype=np.int64)
        inversion_pulses: list[float] = []
        for image in np.argsort(pulses, kind="stable"):
            if inversion_pulses and abs(pulses[image] - inversion_pulses[-1]) <= _SAME_INVERSION_TOLERANCE_MS:
                index[image] = len(inversion_pulses) - 1
            else:
                inversion_pulses.append(float(pulses[image]))
                index[image] = len(inversion_pulses) - 1
        return index

    def events(self) -> list[Event]:
        """Inversions and readouts of the protocol for :func:`inference.bloch.simulate_events`."""
        times, ti = np.array(self.image_times_ms), np.array(self.inversion_times_ms)
        index = self.inversion_index
        centre_offset_ms = self.readout_tr_ms * (0.5 + self.centre_index)
        events: list[Event] = [
            BssfpReadout(
                float(t - centre_offset_ms), i, self.flip_angle_deg, self.readout_tr_ms, self.n_readout,
                self.centre_index,
            )
            for i, t in enumerate(times)
        ]
        for inversion in range(int(index.max()) + 1):
            # The set's earliest image fixes the pulse; the others agree within the heart-rate variation.
            first = np.flatnonzero(index == inversion)[np.argmin(times[index == inversion])]
            events.append(Inversion(float(times[first] - ti[first]), self.inversion_efficiency))
        return events


def protocol_from_tags(
    inversion_times_ms: np.ndarray,
    *,
    fit: PlainFit | str = PlainFit.MOLLI,
    rr_ms: float | None = None,
    heart_rate_bpm: float | None = None,
    acquisition_times_s: np.ndarray | None = None,
    flip_angle_deg: float | None = None,
    repetition_time_ms: float | None = None,
    phase_encoding_lines: int | None = None,
    parallel_factor: float = DEFAULT_PARALLEL_FACTOR,
    partial_fourier: float = DEFAULT_PARTIAL_FOURIER,
    field_strength_t: float | None = None,
    inversion_efficiency: float = DEFAULT_INVERSION_EFFICIENCY,
) -> MolliProtocol:
    """Build a :class:`MolliProtocol` from the numbers a raw series' DICOM tags give.

    Parameters
    ----------
    inversion_times_ms
        InversionTime (or the effective TI) of each image, in acquisition order.
    fit
        ``"molli"`` or ``"shmolli"``.
    rr_ms, heart_rate_bpm
        NominalInterval, else HeartRate; one of them is required.
    acquisition_times_s
        AcquisitionTime of each image in seconds (any origin). Gives each image's time; without it the images are
        laid out by heartbeat: images of one inversion one RR apart, and between inversions the recovery of the
        usual schemes (3 beats for MOLLI 5(3)3, about 3 s when the first set fills about 5 s as in 5s(3s)3s,
        1 beat for ShMOLLI).
    flip_angle_deg
        FlipAngle; :data:`DEFAULT_FLIP_ANGLE_DEG` when missing.
    repetition_time_ms
        RepetitionTime, used as the readout echo spacing when within :data:`READOUT_TR_RANGE_MS`.
    phase_encoding_lines
        Acquired phase-encoding lines before acceleration (the phase entry of AcquisitionMatrix). The pulses per
        image are ``lines x partial_fourier / parallel_factor`` and the k-space centre is read after
        ``lines x (partial_fourier - 0.5) / parallel_factor`` of them (linear ordering). Without it,
        :data:`DEFAULT_READOUT_PULSES`.
    parallel_factor, partial_fourier
        Acceleration and partial-Fourier fraction (1 and 1.0 for a fully sampled readout).
    field_strength_t
        MagneticFieldStrength; chooses the T2 heuristic (:meth:`AssumedT2.for_field`).
    inversion_efficiency
        Assumed inversion efficiency.

    Raises
    ------
    ProtocolError
        If the RR interval is missing or the timings are inconsistent.
    """
    fit = PlainFit(fit)
    ti = np.asarray(inversion_times_ms, dtype=np.float64).ravel()
    if rr_ms is None and heart_rate_bpm is not None and heart_rate_bpm > 0:
        rr_ms = 60000.0 / heart_rate_bpm
    if rr_ms is None:
        raise ProtocolError("the correction needs the RR interval: give rr_ms or heart_rate_bpm")
    if not (1.0 <= parallel_factor <= 8.0 and 0.5 < partial_fourier <= 1.0):
        raise ProtocolError(
            f"parallel_factor must be in [1, 8] and partial_fourier in (0.5, 1], got {parallel_factor}, "
            f"{partial_fourier}"
        )
    tr_ms = DEFAULT_READOUT_TR_MS
    if repetition_time_ms is not None and READOUT_TR_RANGE_MS[0] <= repetition_time_ms <= READOUT_TR_RANGE_MS[1]:
        tr_ms = float(repetition_time_ms)
    if phase_encoding_lines is not None and phase_encoding_lines > 0:
        per_image = phase_encoding_lines / parallel_factor
        n_readout = max(1, round(per_image * partial_fourier))
        centre_index = min(n_readout - 1, round(per_image * (partial_fourier - 0.5)))
    else:
        n_readout = DEFAULT_READOUT_PULSES
        centre_index = round(n_readout * (1.0 - 0.5 / partial_fourier))
    if acquisition_times_s is not None and np.all(np.isfinite(np.asarray(acquisition_times_s, dtype=float))):
        seconds = np.asarray(acquisition_times_s, dtype=np.float64).ravel()
        if seconds.size != ti.size:
            raise ShapeMismatchError(
                f"acquisition_times_s needs one entry per image ({ti.size}), got {seconds.size}"
            )
        order = np.argsort(seconds, kind="stable")
        image_times = (seconds[order] - seconds[order[0]]) * 1000.0
        ti = ti[order]
    else:
        laid_out = _layout_by_heartbeat(ti, float(rr_ms), fit)
        order = np.argsort(laid_out, kind="stable")
        image_times, ti = laid_out[order], ti[order]
    return MolliProtocol(
        inversion_times_ms=tuple(ti),
        image_times_ms=tuple(image_times),
        rr_ms=float(rr_ms),
        flip_angle_deg=float(flip_angle_deg) if flip_angle_deg is not None else DEFAULT_FLIP_ANGLE_DEG,
        readout_tr_ms=tr_ms,
        n_readout=n_readout,
        centre_index=centre_index,
        inversion_efficiency=inversion_efficiency,
        assumed_t2=AssumedT2.for_field(field_strength_t),
        fit=fit,
    )


def _layout_by_heartbeat(ti_ms: np.ndarray, rr_ms: float, fit: PlainFit) -> np.ndarray:
    """k-space centre time of each image when only the TIs are known; see :func:`protocol_from_tags`.

    Every image is read at the same delay after its R wave, so its time is its heartbeat x RR. Images of one
    inversion lie a whole number of RR apart, so TI minus that multiple (the set's shortest TI) names the set;
    sets follow one another in the order of their shortest TI, as the schemes step it up.
    """
    beats_from_first = np.round((ti_ms - ti_ms.min()) / rr_ms)
    base_ti = ti_ms - beats_from_first * rr_ms
    set_of = np.empty(ti_ms.size, dtype=np.int64)
    set_tis: list[float] = []
    for image in np.argsort(base_ti, kind="stable"):
        if not set_tis or base_ti[image] - set_tis[-1] > _SAME_INVERSION_TOLERANCE_MS / 2:
            set_tis.append(float(base_ti[image]))
        set_of[image] = len(set_tis) - 1
    times = np.empty(ti_ms.size)
    start_beat = 0
    for index in range(len(set_tis)):
        members = np.flatnonzero(set_of == index)
        beats = np.round((ti_ms[members] - ti_ms[members].min()) / rr_ms).astype(np.int64)
        times[members] = (start_beat + beats) * rr_ms
        n_beats = int(beats.max()) + 1
        if fit is PlainFit.SHMOLLI:
            recovery = 1
        elif n_beats > 5:  # 5s(3s)3s and similar: the first set fills about 5 s, the recovery about 3 s
            recovery = math.ceil(3000.0 / rr_ms - 1e-6)
        else:
            recovery = 3
        start_beat += n_beats + recovery
    return times


def correct_t1(
    t1_plain_ms: np.ndarray,
    protocol: MolliProtocol,
    *,
    t2_ms: np.ndarray | None = None,
    samples_used: np.ndarray | None = None,
) -> np.ndarray:
    """True T1 for each plain-fit T1, by inverting the simulated bias curve of ``protocol``.

    Parameters
    ----------
    t1_plain_ms
        T1 map (any shape) from the plain fit ``protocol.fit``; NaN stays NaN.
    protocol
        The acquisition.
    t2_ms
        T2 map of the same slice (same shape), used instead of the assumed T2 where finite and positive.
    samples_used
        ShMOLLI: the samples each pixel's conditional fit kept (``T1FitResult.samples_used``); without it every
        pixel is taken as fitted from the first inversion alone.

    Returns
    -------
    np.ndarray
        Corrected T1 in ms, float64, the input's shape.

    Raises
    ------
    ShapeMismatchError
        If ``t2_ms`` or ``samples_used`` do not have the map's shape.
    """
    plain = np.asarray(t1_plain_ms, dtype=np.float64)
    for name, other in (("t2_ms", t2_ms), ("samples_used", samples_used)):
        if other is not None and np.shape(other) != plain.shape:
            raise ShapeMismatchError(f"{name} must have the T1 map's shape {plain.shape}, got {np.shape(other)}")
    first_count = int(np.sum(protocol.inversion_index == 0))
    if protocol.fit is PlainFit.SHMOLLI:
        counts = np.full(plain.shape, first_count) if samples_used is None else np.asarray(samples_used)
    else:
        counts = np.full(plain.shape, len(protocol.inversion_times_ms))
    corrected = np.full(plain.shape, np.nan)
    finite = np.isfinite(plain)
    t2 = np.asarray(t2_ms, dtype=np.float64) if t2_ms is not None else None
    with_t2 = finite & (np.isfinite(t2) & (t2 > 0) if t2 is not None else np.zeros(plain.shape, dtype=bool))
    for count in np.unique(counts[finite]):
        assumed = finite & ~with_t2 & (counts == count)
        if np.any(assumed):
            true_ms, plain_ms = _assumed_t2_curve(protocol)[int(count)]
            corrected[assumed] = _invert(plain[assumed], true_ms, plain_ms)
        given = with_t2 & (counts == count)
        if t2 is not None and np.any(given):  # with_t2, hence given, is all False without t2
            corrected[given] = _invert_with_t2(plain[given], t2[given], _t2_curves(protocol), int(count))
    return corrected


def correction_curve(protocol: MolliProtocol, *, samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(true T1, plain T1) in ms of the assumed-T2 curve: what each true T1 reads as with the plain fit.

    ``samples`` picks the ShMOLLI fit by its sample count (default: the first inversion's images for ShMOLLI,
    all images for MOLLI).
    """
    curves = _assumed_t2_curve(protocol)
    if samples is None:
        samples = int(np.sum(protocol.inversion_index == 0)) if protocol.fit is PlainFit.SHMOLLI else max(curves)
    if samples not in curves:
        raise ProtocolError(f"samples must be one of {sorted(curves)}, got {samples}")
    return curves[samples]


_Curves = dict[int, tuple[np.ndarray, np.ndarray]]


@lru_cache(maxsize=64)
def _assumed_t2_curve(protocol: MolliProtocol) -> _Curves:
    return _simulate_curves(protocol, _T1_GRID_MS, protocol.assumed_t2.t2_ms(_T1_GRID_MS))


@lru_cache(maxsize=16)
def _t2_curves(protocol: MolliProtocol) -> tuple[np.ndarray, list[_Curves]]:
    t1, t2 = np.meshgrid(_T1_GRID_MS, _T2_GRID_MS)  # (T2 node, T1)
    flat = _simulate_curves_flat(protocol, t1.ravel(), t2.ravel())
    per_node = []
    for node in range(_T2_GRID_MS.size):
        part = slice(node * _T1_GRID_MS.size, (node + 1) * _T1_GRID_MS.size)
        per_node.append({count: _monotone(_T1_GRID_MS, plain[part]) for count, plain in flat.items()})
    return _T2_GRID_MS, per_node


def _simulate_curves(protocol: MolliProtocol, t1_ms: np.ndarray, t2_ms: np.ndarray) -> _Curves:
    flat = _simulate_curves_flat(protocol, t1_ms, t2_ms)
    return {count: _monotone(t1_ms, plain) for count, plain in flat.items()}


def _simulate_curves_flat(protocol: MolliProtocol, t1_ms: np.ndarray, t2_ms: np.ndarray) -> dict[int, np.ndarray]:
    """Plain T1 (NaN where the fit is not valid) of each simulated (T1, T2), per sample count of the fit."""
    signal = np.abs(simulate_events(protocol.events(), t1_ms, t2_ms).signal)
    ti = np.array(protocol.inversion_times_ms)
    if protocol.fit is PlainFit.MOLLI:
        fit = fit_t1_molli(signal, ti, t1_max_ms=_T1_MAX_MS, background_fraction=0.0)
        LOGGER.debug("MOLLI correction curve simulated for %d T1 values", t1_ms.size)
        return {ti.size: fit.t1_ms}
    # The conditional fit's subsets: the first inversion's images, then with the second's, then the third's.
    index = protocol.inversion_index
    curves = {}
    for last in range(int(index.max()) + 1):
        chosen = index <= last
        subset_fit = fit_ir_pixels(signal[chosen], ti[chosen], t1_max_ms=_T1_MAX_MS)
        curves[int(chosen.sum())] = subset_fit.t1_ms
    LOGGER.debug("ShMOLLI correction curves simulated for %d T1 values", t1_ms.size)
    return curves


def _monotone(true_ms: np.ndarray, plain_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The longest stretch of the curve where the plain T1 is valid and increases with the true T1.

    At the grid's extremes the noiseless fit can fail (T1 far shorter than the first TI, or beyond its limit);
    those ends are dropped and the correction keeps the end ratios beyond them.
    """
    good = np.isfinite(plain_ms)
    rising = np.concatenate([[False], good[1:] & good[:-1] & (np.diff(plain_ms) > 0)])
    best_start, best_stop, start = 0, 0, 0
    for i in range(1, plain_ms.size + 1):
        if i == plain_ms.size or not rising[i]:
            if good[start] and i - start > best_stop - best_start:
                best_start, best_stop = start, i
            start = i
    if best_stop - best_start < 2:
        raise ProtocolError("the simulated protocol gives no valid plain fit to build a correction from")
    return true_ms[best_start:best_stop], plain_ms[best_start:best_stop]


def _invert(plain: np.ndarray, true_ms: np.ndarray, plain_ms: np.ndarray) -> np.ndarray:
    """Interpolate true T1 from plain T1 in log-log; outside the curve keep its end ratios."""
    log_ratio = np.log(true_ms / plain_ms)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.exp(np.interp(np.log(plain), np.log(plain_ms), log_ratio))
    return np.where(plain > 0, plain * ratio, np.nan)


def _invert_with_t2(
    plain: np.ndarray, t2: np.ndarray, table: tuple[np.ndarray, list[_Curves]], count: int
) -> np.ndarray:
    """Interpolate between the curves of the two T2 nodes around each pixel's T2 (linear in log T2)."""
    nodes, curves = table
    position = np.interp(np.log(t2), np.log(nodes), np.arange(nodes.size))
    lower = np.minimum(np.floor(position).astype(np.int64), nodes.size - 2)
    weight = position - lower
    out = np.zeros(plain.shape)
    for node in np.unique(np.concatenate([lower, lower + 1])):
        at_lower, at_upper = lower == node, lower + 1 == node
        chosen = at_lower | at_upper
        values = _invert(plain[chosen], *curves[node][count])
        w = np.where(at_lower[chosen], 1.0 - weight[chosen], weight[chosen])
        out[chosen] += w * values
    return out
