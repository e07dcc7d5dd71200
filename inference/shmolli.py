"""ShMOLLI 5(1)1(1)1 T1 fitting with conditional use of the later inversions.

ShMOLLI (Piechnik et al., JCMR 2010;12:69) reads five images after a first inversion (one per heartbeat, TI1,
TI1 + RR, ... TI1 + 4 RR), waits one heartbeat, inverts again and reads one image (TI2, about TI1 + 80 ms), waits
one more heartbeat, inverts a third time and reads one image (TI3, about TI1 + 160 ms). The magnetisation has only
about two heartbeats to recover before the second and third inversions, so their samples fit the
three-parameter recovery of the first inversion only when T1 is short against the RR interval. The conditional
reconstruction, as this module implements our reading of the paper:

1. Fit the first inversion's samples (5) with the MOLLI model (:func:`inference.t1_fit.fit_ir_pixels`).
2. Where that T1 is below ``sample_6_max_t1_per_rr`` x RR (default 1.0: T1 < RR), add the second inversion's
   sample and refit.
3. Where the 6-sample T1 is below ``sample_7_max_t1_per_rr`` x RR (default 0.4), add the third inversion's sample
   and refit.

A refit is kept only where it is valid; otherwise the pixel keeps the fit with fewer samples. Long T1 therefore
comes from the first inversion alone (no recovery bias from the later inversions), short T1 from all seven
samples (better precision where the later samples are accurate).

Where the first inversion's fit fails, T1 is usually far below RR: the magnetisation has recovered by the second
image, and five points on a flat line fix no recovery. Those pixels are refitted with the later inversions' samples
too (they are what ShMOLLI adds them for), and such a refit is kept only where its T1 obeys the same rule (below
``sample_6_max_t1_per_rr`` x RR with six samples, ``sample_7_max_t1_per_rr`` x RR with seven).
"""

from __future__ import annotations

import logging

import numpy as np

from inference.errors import ShapeMismatchError, TimingError
from inference.t1_fit import (
    BACKGROUND_FRACTION,
    PixelFit,
    T1FitResult,
    as_image_stack,
    expand_fit,
    fit_ir_pixels,
    foreground_mask,
)

LOGGER = logging.getLogger(__name__)

SAMPLE_6_MAX_T1_PER_RR = 1.0
SAMPLE_7_MAX_T1_PER_RR = 0.4
_MIN_FIRST_INVERSION_IMAGES = 4
_MAX_INVERSIONS = 3


def infer_inversion_index(inversion_times_ms: np.ndarray, rr_ms: float) -> np.ndarray:
    """Which inversion (0 first, 1, 2) each image follows, from the inversion times alone.

    Every inversion of ShMOLLI is read in the heartbeat that follows it, and the later inversions use slightly
    longer TIs than the first (e.g. 100, 180, 260 ms); the first inversion's other images come one or more RR
    intervals later. So the images within RR/2 of the shortest TI come from distinct inversions, numbered in TI
    order, and every other image comes from the first inversion.

    Raises
    ------
    TimingError
        If more than three images fall in the first heartbeat.
    """
    ti_ms = np.asarray(inversion_times_ms, dtype=np.float64)
    first_beat = np.flatnonzero(ti_ms < ti_ms.min() + rr_ms / 2)
    if first_beat.size > _MAX_INVERSIONS:
        raise TimingError(
            f"at most {_MAX_INVERSIONS} images may fall within RR/2 = {rr_ms / 2:g} ms of the shortest TI in "
            f"ShMOLLI, got TIs {np.sort(ti_ms[first_beat]).tolist()}"
        )
    index = np.zeros(ti_ms.size, dtype=np.int64)
    index[first_beat[np.argsort(ti_ms[first_beat], kind="stable")]] = np.arange(first_beat.size)
    return index


def fit_t1_shmolli(
    magnitude: np.ndarray,
    inversion_times_ms: np.ndarray,
    *,
    rr_ms: float,
    inversion_index: np.ndarray | None = None,
    t1_max_ms: float = 4000.0,
    sample_6_max_t1_per_rr: float = SAMPLE_6_MAX_T1_PER_RR,
    sample_7_max_t1_per_rr: float = SAMPLE_7_MAX_T1_PER_RR,
    background_fraction: float = BACKGROUND_FRACTION,
) -> T1FitResult:
    """Fit T1 from ShMOLLI images by the conditional reconstruction of the module docstring.

    Parameters
    ----------
    magnitude
        (n, ...) magnitude images in any order.
    inversion_times_ms
        (n,) effective TI of each image in ms.
    rr_ms
        RR interval of the acquisition in ms.
    inversion_index
        (n,) which inversion each image follows; any integer labels, the smallest meaning the first inversion
        (the one with five or so samples), the next the second, and so on. Inferred from the TIs when omitted
        (:func:`infer_inversion_index`).
    t1_max_ms, background_fraction
        As for :func:`inference.t1_fit.fit_t1_molli`.
    sample_6_max_t1_per_rr, sample_7_max_t1_per_rr
        T1/RR below which the second and third inversion's samples are added.

    Returns
    -------
    T1FitResult
        Maps with the images' trailing shape; ``samples_used`` says which fit each pixel kept.

    Raises
    ------
    ShapeMismatchError, TimingError, SignalError
        If the images, TIs, inversion index or RR interval do not describe a ShMOLLI series.
    """
    if not (np.isfinite(rr_ms) and rr_ms > 0):
        raise TimingError(f"rr_ms must be a positive number of milliseconds, got {rr_ms}")
    stack, ti_ms = as_image_stack(
        magnitude, inversion_times_ms, times_name="inversion_times_ms", min_images=_MIN_FIRST_INVERSION_IMAGES
    )
    if np.any(ti_ms < 0):
        raise TimingError(f"inversion_times_ms must be non-negative, got {ti_ms.tolist()}")
    rank = _inversion_rank(inversion_index, ti_ms, rr_ms)
    pixel_shape = stack.shape[1:]
    flat = stack.reshape(stack.shape[0], -1)
    foreground = foreground_mask(flat, background_fraction)
    pixels = flat[:, foreground]

    in_set = rank == 0
    fit = fit_ir_pixels(pixels[in_set], ti_ms[in_set], t1_max_ms=t1_max_ms)
    fields = {name: getattr(fit, name).copy() for name in PixelFit.__dataclass_fields__}
    unfitted = ~fit.valid  # no value yet: refitted with every inversion's samples (see the module docstring)
    eligible = (fit.valid & (fit.t1_ms < sample_6_max_t1_per_rr * rr_ms)) | unfitted
    # T1/RR limit of the inversion being added, and of the one after it; nothing follows the third
    limits = (sample_6_max_t1_per_rr, sample_7_max_t1_per_rr, 0.0)
    for extra_rank in range(1, int(rank.max()) + 1):
        this_max, next_max = limits[extra_rank - 1], limits[extra_rank]
        in_set = in_set | (rank == extra_rank)
        chosen = np.flatnonzero(eligible)
        refit = fit_ir_pixels(pixels[in_set][:, chosen], ti_ms[in_set], t1_max_ms=t1_max_ms)
        # A pixel without a first-inversion value takes the refit only where its T1 obeys this inversion's rule.
        keep = refit.valid & (~unfitted[chosen] | (refit.t1_ms < this_max * rr_ms))
        accepted = chosen[keep]
        for name in fields:
            fields[name][accepted] = getattr(refit, name)[keep]
        unfitted[accepted] = False
        eligible = np.zeros_like(eligible)
        eligible[accepted] = refit.t1_ms[keep] < next_max * rr_ms
        eligible |= unfitted
        LOGGER.debug(
            "ShMOLLI: inversion %d added in %d of %d pixels", extra_rank + 1, accepted.size, fit.valid.size
        )
    return expand_fit(PixelFit(**fields), foreground, pixel_shape)


def _inversion_rank(inversion_index: np.ndarray | None, ti_ms: np.ndarray, rr_ms: float) -> np.ndarray:
    """0 for the first inversion, 1 for the second, ...; checked against the ShMOLLI layout."""
    if inversion_index is None:
        rank = infer_inversion_index(ti_ms, rr_ms)
    else:
        labels = np.asarray(inversion_index)
        if labels.shape != ti_ms.shape:
            raise ShapeMismatchError(
                f"inversion_index must have one entry per image ({ti_ms.size}), got shape {labels.shape}"
            )
        _, rank = np.unique(labels, return_inverse=True)
        rank = rank.reshape(ti_ms.shape)
    if rank.max() + 1 > _MAX_INVERSIONS:
        raise TimingError(f"ShMOLLI has at most {_MAX_INVERSIONS} inversions, got {rank.max() + 1}")
    first_count = int(np.sum(rank == 0))
    if first_count < _MIN_FIRST_INVERSION_IMAGES:
        raise TimingError(
            f"the first inversion needs at least {_MIN_FIRST_INVERSION_IMAGES} images, got {first_count}"
        )
    return rank
