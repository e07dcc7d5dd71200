"""Sampling schemes of the mapping sequences: which heartbeat each image is read in, and what precedes it.

Timing follows the ECG: R waves at ``r_wave_times_ms`` (the nominal RR with a little beat-to-beat variation),
each readout starts ``trigger_delay_ms`` after its R wave, and the k-space centre is read ``centre_index`` pulses
into the bSSFP train. The effective inversion time of an image is the time from its inversion pulse to the RF pulse
that reads the k-space centre.

Schemes (Messroghli et al. 2004; Kellman and Hansen 2014; Piechnik et al. 2010; Giri et al. 2009):

- MOLLI 5(3)3: inversion, 5 images in 5 beats, 3 beats of recovery, inversion, 3 images; TIs 100 + k RR and
  180 + k RR ms.
- MOLLI 5s(3s)3s: as many beats as fill 5 s, 3 s of recovery and 3 s; at RR 1000 ms it equals 5(3)3.
- ShMOLLI 5(1)1(1)1: 5 images after the first inversion, then single images after inversions with TI 180 and 260
  ms, each set after one beat of recovery.
- T2-prep bSSFP: three images with T2 preparation 0, 25 and 55 ms, three recovery beats between images, after
  a discarded preparatory readout that gives the first image the same magnetisation history as the others.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from phantom.model import SequenceKind

LOGGER = logging.getLogger(__name__)

RR_RANGE_MS = (400.0, 2000.0)
MOLLI_TI_STEP_MS = 80.0  # shift of the minimum TI from one inversion set to the next
T2_PREP_DURATIONS_MS = (0.0, 25.0, 55.0)
T2_PREP_RECOVERY_BEATS = 3


class SchemeError(ValueError):
    """The scheme cannot be built for the requested sequence or heart rate."""


class ReadoutOrdering(str, Enum):
    LINEAR = "linear"  # k-space centre in the middle of the train
    CENTRIC = "centric"  # k-space centre at the first pulse


@dataclass(frozen=True)
class Readout:
    """Single-shot bSSFP readout: an alpha/2 catalyst TR/2 before ``n_readout`` pulses of alternating phase."""

    flip_angle_deg: float
    tr_ms: float
    te_ms: float
    n_readout: int
    centre_index: int  # pulse (0-based) whose echo samples the k-space centre
    ordering: ReadoutOrdering

    @property
    def centre_offset_ms(self) -> float:
        """Time from the catalyst pulse (start of the readout) to the RF pulse that reads the k-space centre."""
        return self.tr_ms / 2.0 + self.centre_index * self.tr_ms

    @property
    def duration_ms(self) -> float:
        return self.tr_ms / 2.0 + self.n_readout * self.tr_ms


@dataclass(frozen=True)
class InversionSet:
    """One inversion (or T2 preparation) and the images that follow it before the next one."""

    first_heartbeat: int
    n_images: int
    minimum_ti_ms: float  # IR sets: effective TI of the first image; 0 for T2-prep
    t2_prep_ms: float  # T2-prep sets: preparation duration; 0 for IR


@dataclass(frozen=True)
class Scheme:
    """Timing of one mapping acquisition. Per-image tuples are in acquisition order."""

    kind: SequenceKind
    rr_ms: float  # nominal RR interval
    r_wave_times_ms: tuple[float, ...]  # every R wave of the breath-hold, from 0
    trigger_delay_ms: float  # R wave to the start of the readout (the catalyst pulse)
    readout: Readout
    sets: tuple[InversionSet, ...]
    inversion_efficiency: float  # adiabatic inversion: Mz -> -efficiency * Mz

    @property
    def is_inversion_recovery(self) -> bool:
        return self.kind is not SequenceKind.T2PREP

    @property
    def n_images(self) -> int:
        return sum(s.n_images for s in self.sets)

    @property
    def image_heartbeats(self) -> tuple[int, ...]:
        """Heartbeat index of each image."""
        beats: list[int] = []
        for s in self.sets:
            step = T2_PREP_RECOVERY_BEATS + 1 if not self.is_inversion_recovery else 1
            beats.extend(s.first_heartbeat + k * step for k in range(s.n_images))
        return tuple(beats)

    @property
    def image_set_index(self) -> tuple[int, ...]:
        """Index into ``sets`` of the inversion (or preparation) each image follows."""
        return tuple(i for i, s in enumerate(self.sets) for _ in range(s.n_images))

    @property
    def readout_start_times_ms(self) -> np.ndarray:
        return np.array([self.r_wave_times_ms[b] + self.trigger_delay_ms for b in self.image_heartbeats])

    @property
    def centre_times_ms(self) -> np.ndarray:
        """Time of the RF pulse reading the k-space centre of each image (ms since the first R wave)."""
        return self.readout_start_times_ms + self.readout.centre_offset_ms

    @property
    def inversion_pulse_times_ms(self) -> np.ndarray:
        """Time of each set's inversion pulse (IR schemes); the first image of a set has TI = minimum_ti_ms."""
        centres = self.centre_times_ms
        firsts = np.cumsum([0] + [s.n_images for s in self.sets[:-1]])
        return np.array([centres[f] - s.minimum_ti_ms for f, s in zip(firsts, self.sets, strict=True)])

    @property
    def inversion_times_ms(self) -> np.ndarray | None:
        """Effective TI of each image (IR schemes), None for T2-prep."""
        if not self.is_inversion_recovery:
            return None
        inversions = self.inversion_pulse_times_ms[list(self.image_set_index)]
        return self.centre_times_ms - inversions

    @property
    def t2_prep_ms(self) -> np.ndarray | None:
        """T2-preparation duration of each image (T2-prep), None for IR schemes."""
        if self.is_inversion_recovery:
            return None
        return np.array([s.t2_prep_ms for s in self.sets for _ in range(s.n_images)])

    @property
    def duration_ms(self) -> float:
        """From the first R wave to the end of the last readout."""
        return float(self.readout_start_times_ms[-1] + self.readout.duration_ms)


def make_scheme(
    kind: SequenceKind, rr_ms: float, rng: np.random.Generator, *, heart_rate_variability: float = 0.015
) -> Scheme:
    """Build the sampling scheme of ``kind`` at the heart rate ``rr_ms``.

    Parameters
    ----------
    kind
        The sequence.
    rr_ms
        Nominal RR interval (ms), 400-2000.
    rng
        Draws the readout details (TR, train length, trigger delay, inversion efficiency) and the beat-to-beat
        variation of the RR interval.
    heart_rate_variability
        Standard deviation of each RR interval relative to ``rr_ms``.

    Raises
    ------
    SchemeError
        If ``rr_ms`` is out of range or too short for the readout.
    """
    kind = SequenceKind(kind)
    if not RR_RANGE_MS[0] <= rr_ms <= RR_RANGE_MS[1]:
        raise SchemeError(f"rr_ms must be in [{RR_RANGE_MS[0]}, {RR_RANGE_MS[1]}], got {rr_ms}")
    if not 0.0 <= heart_rate_variability < 0.1:
        raise SchemeError(f"heart_rate_variability must be in [0, 0.1), got {heart_rate_variability}")
    readout = _draw_readout(kind, rng)
    sets = _sets(kind, rr_ms, rng, readout)
    n_beats = (
        max(s.first_heartbeat for s in sets)
        + sets[-1].n_images * (T2_PREP_RECOVERY_BEATS + 1 if kind is SequenceKind.T2PREP else 1)
        + 1
    )
    rr_intervals = rr_ms * np.clip(1.0 + rng.normal(0.0, heart_rate_variability, n_beats), 0.8, 1.2)
    r_waves = np.concatenate([[0.0], np.cumsum(rr_intervals)[:-1]])
    # Readout in diastole, ending 50-120 ms before the next R wave.
    shortest_rr = float(rr_intervals.min())
    trigger_delay = shortest_rr - readout.duration_ms - float(rng.uniform(50.0, 120.0))
    longest_prep = max(s.t2_prep_ms for s in sets)
    if trigger_delay < 100.0 + longest_prep:
        raise SchemeError(
            f"rr_ms {rr_ms} is too short for a {readout.duration_ms:.0f} ms readout"
            f"{' after a T2 preparation' if longest_prep else ''}"
        )
    efficiency = float(rng.uniform(0.95, 0.98)) if kind is not SequenceKind.T2PREP else 1.0
    scheme = Scheme(
        kind=kind,
        rr_ms=float(rr_ms),
        r_wave_times_ms=tuple(round(float(t), 3) for t in r_waves),
        trigger_delay_ms=round(trigger_delay, 3),
        readout=readout,
        sets=sets,
        inversion_efficiency=efficiency,
    )
    LOGGER.debug("scheme %s: %d images over %.0f ms", kind.value, scheme.n_images, scheme.duration_ms)
    return scheme


def _draw_readout(kind: SequenceKind, rng: np.random.Generator) -> Readout:
    tr_ms = round(float(rng.uniform(2.5, 3.0)), 3)
    n_readout = int(rng.integers(60, 81))
    if kind is SequenceKind.T2PREP:
        return Readout(70.0, tr_ms, tr_ms / 2.0, n_readout, 0, ReadoutOrdering.CENTRIC)
    # Linear ordering with partial Fourier: the k-space centre about 30% into the train.
    return Readout(35.0, tr_ms, tr_ms / 2.0, n_readout, round(0.3 * n_readout), ReadoutOrdering.LINEAR)


def _sets(kind: SequenceKind, rr_ms: float, rng: np.random.Generator, readout: Readout) -> tuple[InversionSet, ...]:
    """(images, recovery beats after) per inversion set, laid out over heartbeats."""
    # The inversion must come before the readout starts.
    first_ti = round(max(float(rng.uniform(95.0, 110.0)), readout.centre_offset_ms + 10.0), 1)
    if kind is SequenceKind.T2PREP:
        step = T2_PREP_RECOVERY_BEATS + 1
        return tuple(InversionSet(i * step, 1, 0.0, prep) for i, prep in enumerate(T2_PREP_DURATIONS_MS))
    layout: tuple[tuple[int, int], ...]  # (images, recovery beats after) per inversion
    if kind is SequenceKind.MOLLI_533:
        layout = ((5, 3), (3, 0))
    elif kind is SequenceKind.MOLLI_5S3S3S:
        beats = [max(1, math.ceil(seconds * 1000.0 / rr_ms - 1e-6)) for seconds in (5.0, 3.0, 3.0)]
        layout = ((beats[0], beats[1]), (beats[2], 0))
    elif kind is SequenceKind.SHMOLLI:
        layout = ((5, 1), (1, 1), (1, 0))
    else:
        raise SchemeError(f"no sampling scheme for sequence {kind!r}")
    sets = []
    beat = 0
    for index, (n_images, recovery) in enumerate(layout):
        sets.append(InversionSet(beat, n_images, first_ti + index * MOLLI_TI_STEP_MS, 0.0))
        beat += n_images + recovery
    return tuple(sets)
