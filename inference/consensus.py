"""Consensus of several readers' masks: STAPLE, or the average of signed distance maps.

Which readers make a reference, and whether a gold standard takes their place, is decided outside the models'
analysis (``dicomnode.analysis.reference``); this module only combines the masks it is given.

STAPLE follows Warfield, Zou and Wells, "Simultaneous truth and performance level estimation (STAPLE)", IEEE
Trans Med Imaging 23(7):903-921, 2004: expectation-maximisation over the hidden true segmentation, with one
sensitivity ``p`` and one specificity ``q`` per reader and a global prior probability of foreground.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import ndimage

from inference.errors import AnalysisError, ShapeMismatchError

LOGGER = logging.getLogger(__name__)

# Sensitivity and specificity are kept inside (eps, 1 - eps) so that the log-likelihoods stay finite when a reader
# agrees with the estimate everywhere.
_PERFORMANCE_EPS = 1e-10
# Warfield et al. start every reader at high sensitivity and specificity.
_INITIAL_PERFORMANCE = 0.99


class ConsensusError(AnalysisError):
    """Readers' masks cannot be combined as asked (none given, unknown method, bad parameter)."""


class ConsensusMethod(str, Enum):
    """How readers' masks are combined."""

    STAPLE = "staple"
    AVERAGE = "average"


class ReferenceKind(str, Enum):
    """Which combination a consensus result stands for."""

    STAPLE = "staple"
    AVERAGE = "average"


@dataclass(frozen=True)
class StapleResult:
    """Outcome of STAPLE.

    ``posterior`` is the probability that each pixel is foreground given all readers; ``sensitivity`` and
    ``specificity`` hold one value per reader, in the order the masks were given.
    """

    consensus_mask: np.ndarray  # bool, posterior >= 0.5
    posterior: np.ndarray  # float64 in [0, 1]
    sensitivity: np.ndarray  # (n_readers,)
    specificity: np.ndarray  # (n_readers,)
    prior: float
    iterations: int
    converged: bool


@dataclass(frozen=True)
class ConsensusResult:
    """The reference mask chosen for a set of readers, and what it is."""

    mask: np.ndarray  # bool
    reference: ReferenceKind
    n_readers: int  # readers combined
    staple: StapleResult | None = None


def _stack(masks: Sequence[np.ndarray]) -> np.ndarray:
    if len(masks) == 0:
        raise ConsensusError("at least one reader's mask is needed, got none")
    arrays = [np.asarray(m) for m in masks]
    shape = arrays[0].shape
    for index, array in enumerate(arrays):
        if array.shape != shape:
            raise ShapeMismatchError(f"mask {index} has shape {array.shape}, expected {shape} like mask 0")
    return np.stack([a.astype(bool) for a in arrays])


def staple(
    masks: Sequence[np.ndarray],
    *,
    max_iterations: int = 50,
    tolerance: float = 1e-6,
    prior: float | None = None,
) -> StapleResult:
    """Binary STAPLE consensus of readers' masks.

    Parameters
    ----------
    masks
        One boolean mask per reader, all of the same shape.
    max_iterations
        Most EM iterations.
    tolerance
        Convergence when no sensitivity or specificity changes by more than this between iterations.
    prior
        Prior probability that a pixel is foreground; by default the mean fraction of foreground over readers.

    Returns
    -------
    StapleResult

    Raises
    ------
    ConsensusError
        If no mask is given, ``max_iterations`` is below 1, or ``prior`` is outside (0, 1).
    ShapeMismatchError
        If the masks differ in shape.
    """
    stack = _stack(masks)
    if max_iterations < 1:
        raise ConsensusError(f"max_iterations must be at least 1, got {max_iterations}")
    decisions = stack.reshape(stack.shape[0], -1)
    if prior is None:
        prior = float(decisions.mean())
    if not 0.0 < prior < 1.0:
        raise ConsensusError(
            f"prior must be in (0, 1), got {prior} (all masks empty or all full leave nothing to estimate)"
        )
    # Pixels with the same pattern of votes share their posterior: EM over the distinct patterns only.
    patterns, counts = np.unique(decisions.T, axis=0, return_counts=True)
    patterns_f = patterns.astype(np.float64)  # (n_patterns, n_readers)
    weights = counts.astype(np.float64)
    n_readers = stack.shape[0]
    sensitivity = np.full(n_readers, _INITIAL_PERFORMANCE)
    specificity = np.full(n_readers, _INITIAL_PERFORMANCE)
    log_prior_ratio = np.log(prior) - np.log1p(-prior)
    converged = False
    iterations = 0
    while iterations < max_iterations:
        iterations += 1
        posterior_patterns = _e_step(patterns_f, sensitivity, specificity, log_prior_ratio)
        fg = weights * posterior_patterns
        bg = weights * (1.0 - posterior_patterns)
        new_sensitivity = (fg @ patterns_f) / max(fg.sum(), np.finfo(float).tiny)
        new_specificity = (bg @ (1.0 - patterns_f)) / max(bg.sum(), np.finfo(float).tiny)
        new_sensitivity = np.clip(new_sensitivity, _PERFORMANCE_EPS, 1.0 - _PERFORMANCE_EPS)
        new_specificity = np.clip(new_specificity, _PERFORMANCE_EPS, 1.0 - _PERFORMANCE_EPS)
        change = max(np.abs(new_sensitivity - sensitivity).max(), np.abs(new_specificity - specificity).max())
        sensitivity, specificity = new_sensitivity, new_specificity
        if change <= tolerance:
            converged = True
            break
    posterior_patterns = _e_step(patterns_f, sensitivity, specificity, log_prior_ratio)
    # Map each pixel back to its pattern's posterior.
    _, inverse = np.unique(decisions.T, axis=0, return_inverse=True)
    posterior = posterior_patterns[inverse.ravel()].reshape(stack.shape[1:])
    if not converged:
        LOGGER.warning("STAPLE did not converge in %d iterations (tolerance %g)", max_iterations, tolerance)
    return StapleResult(
        consensus_mask=posterior >= 0.5,
        posterior=posterior,
        sensitivity=sensitivity,
        specificity=specificity,
        prior=float(prior),
        iterations=iterations,
        converged=converged,
    )


def _e_step(
    patterns: np.ndarray, sensitivity: np.ndarray, specificity: np.ndarray, log_prior_ratio: float
) -> np.ndarray:
    """Posterior of foreground for each vote pattern, computed as a logistic of the log-likelihood ratio."""
    log_fg = patterns @ np.log(sensitivity) + (1.0 - patterns) @ np.log1p(-sensitivity)
    log_bg = (1.0 - patterns) @ np.log(specificity) + patterns @ np.log1p(-specificity)
    return 1.0 / (1.0 + np.exp(-(log_prior_ratio + log_fg - log_bg)))


def _spacing(pixel_spacing_mm: float | Sequence[float]) -> tuple[float, float]:
    values = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConsensusError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm}")
    return float(values[0]), float(values[1])


def signed_distance_mm(mask: np.ndarray, pixel_spacing_mm: float | Sequence[float]) -> np.ndarray:
    """Distance (mm) to the other side of the mask border: negative inside, positive outside."""
    mask = np.asarray(mask, dtype=bool)
    sampling = _spacing(pixel_spacing_mm)
    if not mask.any() or mask.all():
        raise ConsensusError("a signed distance needs a mask with both foreground and background")
    return ndimage.distance_transform_edt(~mask, sampling=sampling) - ndimage.distance_transform_edt(
        mask, sampling=sampling
    )


def average_contour_mask(masks: Sequence[np.ndarray], pixel_spacing_mm: float | Sequence[float]) -> np.ndarray:
    """Mask inside the zero level set of the readers' mean signed distance map (mm).

    Parameters
    ----------
    masks
        One boolean mask per reader, all of the same shape, none empty or full.
    pixel_spacing_mm
        (between rows, between columns) as DICOM PixelSpacing, or one value for square pixels.

    Raises
    ------
    ConsensusError
        If no mask is given, a mask is empty or full, or the spacing is not positive.
    ShapeMismatchError
        If the masks differ in shape.
    """
    stack = _stack(masks)
    mean_distance = np.mean([signed_distance_mm(m, pixel_spacing_mm) for m in stack], axis=0)
    return mean_distance < 0.0


def consensus(
    masks: Sequence[np.ndarray],
    *,
    method: ConsensusMethod | str = ConsensusMethod.STAPLE,
    pixel_spacing_mm: float | Sequence[float] | None = None,
) -> ConsensusResult:
    """The readers' consensus by ``method``.

    Parameters
    ----------
    masks
        Readers' boolean masks, all of one shape.
    method
        ``"staple"`` or ``"average"`` (the latter needs ``pixel_spacing_mm``).

    Raises
    ------
    ConsensusError
        If ``method`` is unknown, no reader is given, or the average is asked for without ``pixel_spacing_mm``.
    ShapeMismatchError
        If the masks differ in shape.
    """
    try:
        method = ConsensusMethod(method)
    except ValueError as error:
        raise ConsensusError(f"method must be one of {[m.value for m in ConsensusMethod]}, got {method!r}") from error
    if len(masks) == 0:
        raise ConsensusError("no readers' masks to combine")
    if method is ConsensusMethod.STAPLE:
        result = staple(masks)
        return ConsensusResult(
            mask=result.consensus_mask, reference=ReferenceKind.STAPLE, n_readers=len(masks), staple=result
        )
    if pixel_spacing_mm is None:
        raise ConsensusError("the average contour needs pixel_spacing_mm, got None")
    return ConsensusResult(
        mask=average_contour_mask(masks, pixel_spacing_mm), reference=ReferenceKind.AVERAGE, n_readers=len(masks)
    )
