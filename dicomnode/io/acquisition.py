"""The acquisition a raw mapping series describes: its scheme, which inversion each image follows, its RR interval.

Scanners rarely state these in tags a reader can trust, so they are inferred from what the series does carry: the
series description and sequence name, the number of images, the inversion times and the acquisition times.
"""

from __future__ import annotations

import numpy as np

from dicomnode.io.series_loader import LoadedSeries, SliceStack, TimingKind
from inference.mapping import MappingScheme

#: MOLLI variants never have 7 images (5(3)3: 8, 4(1)3(1)2: 9, 3(3)3(3)5: 11); ShMOLLI 5(1)1(1)1 has 7.
SHMOLLI_IMAGES = 7
#: Two images follow the same inversion when their TI difference matches their acquisition time difference
#: within this many ms, or this fraction of the time difference (heart-rate variability, time stamp rounding).
SAME_INVERSION_TOLERANCE_MS = 100.0
SAME_INVERSION_TOLERANCE_FRACTION = 0.1
#: Plausible RR intervals (ms) when the RR is inferred from the inversion times (30-240 beats per minute).
RR_RANGE_MS = (250.0, 2000.0)


def mapping_scheme(loaded: LoadedSeries, stack: SliceStack) -> MappingScheme:
    """MOLLI, ShMOLLI or T2-prep: from the timing kind, the series description or sequence name, then the
    number of images."""
    if loaded.timing is TimingKind.T2_PREP:
        return MappingScheme.T2PREP
    names = f"{loaded.series_description} {loaded.sequence_name}".upper()
    if "SHMOLLI" in names:
        return MappingScheme.SHMOLLI
    if "MOLLI" in names:
        return MappingScheme.MOLLI
    return MappingScheme.SHMOLLI if stack.times_ms.size == SHMOLLI_IMAGES else MappingScheme.MOLLI


def inversion_index(stack: SliceStack) -> np.ndarray | None:
    """Which inversion each image follows (0, 1, ...), from acquisition order; ``None`` when the images do not
    all carry an acquisition time.

    Within one inversion the images are read one or more heartbeats apart, and the inversion time grows by the
    time that passed; an image whose inversion time did not grow with the clock follows a new inversion.
    """
    if stack.times_ms.size == 0 or not np.all(np.isfinite(stack.acquisition_times_s)):
        return None
    order = np.argsort(stack.acquisition_times_s, kind="stable")
    ti_steps_ms = np.diff(stack.times_ms[order])
    clock_steps_ms = np.diff(stack.acquisition_times_s[order]) * 1000.0
    tolerance_ms = np.maximum(SAME_INVERSION_TOLERANCE_MS, SAME_INVERSION_TOLERANCE_FRACTION * clock_steps_ms)
    restarts = np.concatenate([[0], (np.abs(ti_steps_ms - clock_steps_ms) > tolerance_ms).astype(np.int64)])
    index = np.empty_like(restarts)
    index[order] = np.cumsum(restarts)
    return index


def rr_interval_ms(loaded: LoadedSeries, stack: SliceStack) -> float | None:
    """The RR interval: from the tags, else from the TI steps within one inversion, else the most common
    TI difference in the plausible RR range (images of one inversion lie one or more RR apart)."""
    if loaded.nominal_interval_ms is not None:
        return loaded.nominal_interval_ms
    times = stack.times_ms
    index = inversion_index(stack)
    if index is not None:
        steps = [
            np.diff(np.sort(times[index == label])) for label in np.unique(index) if np.sum(index == label) > 1
        ]
        within = np.concatenate(steps) if steps else np.array([])
        within = within[(within >= RR_RANGE_MS[0]) & (within <= RR_RANGE_MS[1])]
        if within.size:
            return float(np.median(within))
    differences = np.abs(times[:, None] - times[None, :])[np.triu_indices(times.size, k=1)]
    candidates = differences[(differences >= RR_RANGE_MS[0]) & (differences <= RR_RANGE_MS[1])]
    if candidates.size == 0:
        return None
    support = [(np.sum(np.abs(candidates - c) <= 0.02 * c), -c) for c in candidates]
    best = max(range(candidates.size), key=lambda i: support[i])
    return float(candidates[best])
