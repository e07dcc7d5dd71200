"""Segmentation quality control without ground truth: the Dice a segmentation would have, predicted by searching
the latent space of a variational autoencoder of (map, segmentation) pairs for the nearest good pair.

The autoencoder was trained on good pairs only (the map with the truth or an expert myocardium). Given a map and a
segmentation, the search starts at the encoder's mean and moves through the latent space to the decoded pair that
best explains both the map and the segmentation. The map pins the search to this heart, so the good segmentation
it finds departs from a poor given one, and the Dice of the two measures the given one's quality. The raw Dice is
mapped through the calibration stated in the decoder's model card (fitted on phantom cases the autoencoder did not
see), when the card has one.

ONNX Runtime has no gradients, so the search is L-BFGS-B with forward finite differences: the current latent and
its 8 perturbed copies are decoded in one batch per step.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, spatial

from inference.grids import CROP_SIZE, lv_grid, mask_centre_px, normalise_map, sample, sample_mask
from inference.runtime import Model

#: Weights of the search objective: mean squared error of the map channel and of the segmentation channel, and the
#: latent's squared norm (the N(0, I) prior, per dimension) that keeps the search where the decoder was trained.
#: The segmentation's weight is small: a wrong border costs far more squared error in the mask channel than in the
#: map, and the search is to follow the heart in the map rather than copy the segmentation it was given.
IMAGE_WEIGHT = 1.0
MASK_WEIGHT = 0.05
PRIOR_WEIGHT = 1e-4
#: Forward-difference step in latent units, and the L-BFGS-B limits (iterations, objective evaluations).
DIFFERENCE_STEP = 1e-2
MAX_ITERATIONS = 6
MAX_EVALUATIONS = 10
#: The map's squared error is weighted by a Gaussian window around the crop centre (mean weight 1), where the
#: heart is: the rest of the field of view says nothing about the myocardium. The autoencoder was trained with it.
IMAGE_WINDOW_SIGMA_PX = 20.0
#: Decoded segmentation probabilities above this are myocardium.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class QualityEstimate:
    """Predicted myocardium Dice of a segmentation, and what the search did."""

    predicted_dice: float
    reconstruction_error: float  # mean squared error of the nearest good pair against the given pair
    evaluations: int  # decoder evaluations the latent search used


@dataclass(frozen=True)
class SearchResult:
    """The nearest good pair the latent search found, on the crop grid."""

    latent: np.ndarray  # (8,)
    reconstruction: np.ndarray  # (2, 96, 96): map, segmentation probability
    objective: float
    evaluations: int


def image_window(size: int = CROP_SIZE, sigma_px: float = IMAGE_WINDOW_SIGMA_PX) -> np.ndarray:
    """(size, size) float32 Gaussian weights around the grid centre, scaled to a mean of 1."""
    offsets = np.arange(size) - (size - 1) / 2.0
    window = np.exp(-0.5 * (offsets[:, np.newaxis] ** 2 + offsets[np.newaxis] ** 2) / sigma_px**2)
    return (window / window.mean()).astype(np.float32)


def filled_centre_px(mask: np.ndarray) -> tuple[float, float]:
    """Centroid (x, y) of the area inside the mask's convex hull: the filled myocardium, also when the ring is
    open (a sector left out), where filling holes would leave the cavity out and move the centre."""
    rows, columns = np.nonzero(mask)
    if rows.size < 3 or np.ptp(rows) == 0 or np.ptp(columns) == 0:
        return mask_centre_px(mask)
    # Pixel corners, so that the hull of a thin mask still has an area.
    x = np.concatenate([columns - 0.5, columns + 0.5, columns - 0.5, columns + 0.5])
    y = np.concatenate([rows - 0.5, rows - 0.5, rows + 0.5, rows + 0.5])
    hull = spatial.ConvexHull(np.stack([x, y], axis=1))
    vx, vy = x[hull.vertices], y[hull.vertices]  # counter-clockwise
    cross = vx * np.roll(vy, -1) - np.roll(vx, -1) * vy
    area = cross.sum() / 2.0
    return (float(((vx + np.roll(vx, -1)) * cross).sum() / (6.0 * area)),
            float(((vy + np.roll(vy, -1)) * cross).sum() / (6.0 * area)))


def crop_pair(map_values: np.ndarray, myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float,
              lv_centre_px: tuple[float, float] | None = None) -> np.ndarray:
    """The (2, 96, 96) pair the autoencoder reads: normalised map and myocardium (0/1) on the crop grid centred
    on ``lv_centre_px`` (x, y), or on the centroid of the filled myocardium when None."""
    mask = np.asarray(myocardium_mask, dtype=bool)
    centre = lv_centre_px if lv_centre_px is not None else filled_centre_px(mask)
    grid = lv_grid(centre, pixel_spacing_mm)
    image = normalise_map(sample(np.asarray(map_values, dtype=np.float32), grid))
    return np.stack([image, sample_mask(mask, grid).astype(np.float32)])


class _BudgetSpentError(Exception):
    """The search used its objective evaluations; L-BFGS-B alone may overrun ``maxfun`` in a line search."""


def search_latent(pair: np.ndarray, encoder: Model, decoder: Model) -> SearchResult:
    """Search the latent space, from the encoder's mean, for the decoded pair nearest ``pair`` (2, 96, 96)."""
    start = encoder.run({"pair": pair[np.newaxis]}, ["mean"])["mean"][0].astype(np.float64)
    size = start.size
    weights = np.stack([IMAGE_WEIGHT * image_window(pair.shape[-1], IMAGE_WINDOW_SIGMA_PX),
                        np.full(pair.shape[-2:], MASK_WEIGHT, dtype=np.float32)])
    steps = np.vstack([np.zeros(size), DIFFERENCE_STEP * np.eye(size)])
    best: dict[str, Any] = {"objective": np.inf}  # and, once an objective is finite: latent, reconstruction
    calls = 0

    def objective_and_gradient(latent: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal calls
        if calls >= MAX_EVALUATIONS:
            raise _BudgetSpentError
        calls += 1
        latents = latent[np.newaxis] + steps
        decoded = decoder.run({"latent": latents.astype(np.float32)}, ["reconstruction"])["reconstruction"]
        errors = np.mean(weights * (decoded - pair[np.newaxis]) ** 2, axis=(2, 3)).sum(axis=1)
        values = errors.astype(np.float64) + PRIOR_WEIGHT * np.mean(latents**2, axis=1)
        if values[0] < best["objective"]:
            best.update(objective=float(values[0]), latent=latent.copy(), reconstruction=decoded[0])
        return float(values[0]), (values[1:] - values[0]) / DIFFERENCE_STEP

    with contextlib.suppress(_BudgetSpentError):  # the best pair met so far stands
        optimize.minimize(objective_and_gradient, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": MAX_ITERATIONS, "maxfun": MAX_EVALUATIONS})
    evaluations = calls * steps.shape[0]
    return SearchResult(latent=best["latent"], reconstruction=best["reconstruction"],
                        objective=float(best["objective"]), evaluations=evaluations)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks on the same grid; 1 when both are empty."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def calibrate(raw_dice: float, calibration: dict[str, object] | None) -> float:
    """Map a raw Dice through the card's calibration: a monotone piecewise-linear curve (``raw``, ``dice`` knots);
    the raw Dice itself when there is none."""
    if not calibration:
        return float(raw_dice)
    raw_knots = np.asarray(calibration["raw"], dtype=np.float64)
    dice_knots = np.asarray(calibration["dice"], dtype=np.float64)
    return float(np.clip(np.interp(raw_dice, raw_knots, dice_knots), 0.0, 1.0))


def raw_dice(search: SearchResult, pair: np.ndarray) -> float:
    """Dice of the nearest good pair's segmentation against the given one, on the crop grid."""
    return mask_dice(search.reconstruction[1] > MASK_THRESHOLD, pair[1] > 0.5)


def predict_dice(map_values: np.ndarray, myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float,
                 encoder: Model, decoder: Model, *, lv_centre_px: tuple[float, float] | None = None
                 ) -> QualityEstimate:
    """Predicted Dice of ``myocardium_mask`` against the (unknown) true myocardium of ``map_values``.

    ``map_values`` is the T1 or T2 map in ms on the source pixels, ``myocardium_mask`` the segmentation on the same
    pixels, ``pixel_spacing_mm`` (row, column). An empty segmentation has a predicted Dice of 0 (no search).
    """
    mask = np.asarray(myocardium_mask, dtype=bool)
    if not mask.any():
        return QualityEstimate(predicted_dice=0.0, reconstruction_error=float("nan"), evaluations=0)
    pair = crop_pair(map_values, mask, pixel_spacing_mm, lv_centre_px)
    search = search_latent(pair, encoder, decoder)
    calibration = decoder.card.raw.get("calibration")
    return QualityEstimate(
        predicted_dice=calibrate(raw_dice(search, pair), calibration),
        reconstruction_error=float(np.mean((search.reconstruction - pair) ** 2)),
        evaluations=search.evaluations,
    )
