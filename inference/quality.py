"""Segmentation quality control without ground truth: the Dice a segmentation would have, predicted by searching
the latent space of a variational autoencoder of (map, segmentation) pairs for the nearest good pair.

The autoencoder was trained on good pairs only (the map with the truth or an expert myocardium). Given a map and a
segmentation, the search starts at the encoder's mean and moves through the latent space to the decoded pair that
best explains both the map and the segmentation. The map pins the search to this heart, so the good segmentation
it finds departs from a poor given one, and the Dice of the two measures the given one's quality. The raw Dice is
mapped through the calibration stated in the decoder's model card (fitted on phantom cases the autoencoder did not
see), when the card has one.

ONNX Runtime has no gradients; the objective is a weighted sum of squares, so the search is Levenberg-Marquardt
with a Jacobian by forward differences (the latent's 8 perturbed copies decoded in one batch), taken three times
and kept current by Broyden's update in between, the normal matrix updated with it: 37 decoded latents. The
residuals and Jacobians are float32 (the decoder's precision), the small linear systems float64. The searches of a
series' slices advance together, one decoder run for all of them per step.

The autoencoder alone is too trusting on images unlike its training data (it explains an unfamiliar image poorly
and then anything goes). A second, independent estimate bounds it: the agreement of the segmentation with the
segmentation model's own answer on the left-right mirrored map (test-time augmentation). A model that has learnt
the image answers the same whichever way the heart faces; where it has not, its answers scatter and the agreement
falls. The predicted Dice is the lower of the two. On the real Sunnybrook slices with the shipped models and
degraded copies (noise, blur, gamma, inverted contrast; python -m benchmarks.qc_accuracy), the lower of the two has
a mean absolute error of 0.188 against 0.195 (autoencoder) and 0.201 (agreement), and flags 86 of the 92 slices of
true Dice < 0.7 and none of the 29 of Dice >= 0.8. The up-down mirror, once taken as well (the lower agreement of
the two), flagged the same slices (MAE 0.193) for a further segmentation run per slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import spatial

from inference.grids import CROP_SIZE, lv_grid, mask_centre_px, normalise_map, sample, sample_mask
from inference.runtime import Model
from inference.segmentation import Segmentation, mirrored_segmentations

#: Weights of the search objective: mean squared error of the map channel and of the segmentation channel, and the
#: latent's squared norm (the N(0, I) prior, per dimension) that keeps the search where the decoder was trained.
#: The segmentation's weight is small: a wrong border costs far more squared error in the mask channel than in the
#: map, and the search is to follow the heart in the map rather than copy the segmentation it was given.
IMAGE_WEIGHT = 1.0
MASK_WEIGHT = 0.05
PRIOR_WEIGHT = 1e-4
#: Forward-difference step in latent units.
DIFFERENCE_STEP = 1e-2
#: Levenberg-Marquardt steps, the steps at which the Jacobian is taken afresh by forward differences (Broyden's
#: update between them), and the damping (relative to the normal matrix' diagonal) it starts from and keeps above.
#: 37 decoded latents per search (latent of 8; the latent itself is decoded again at no Jacobian step after the
#: first, its residual is known), against 71-77 for the L-BFGS-B of 10 objective evaluations it replaced. With the
#: Jacobian at steps 0 and 4 only (26 latents) the search stopped short: a real slice of true
#: Dice 0.66 was predicted 0.82 and not flagged (tests/unit/inference/test_quality_real.py); the third Jacobian
#: brings it to 0.79. The decoder's card states the calibration and the figures measured with this search.
SEARCH_STEPS = 12
JACOBIAN_AT = (0, 4, 8)
INITIAL_DAMPING = 1e-3
MIN_DAMPING = 1e-7
#: The map's squared error is weighted by a Gaussian window around the crop centre (mean weight 1), where the
#: heart is: the rest of the field of view says nothing about the myocardium. The autoencoder was trained with it.
IMAGE_WINDOW_SIGMA_PX = 20.0
#: The most searches advanced together, on the CPU and on a GPU, and the most latents per decoder run. On the CPU
#: alone two or four at a time cost about the same (float32 Jacobians of 0.6 MB each: 19.7-20.6 ms per search at
#: 2, 19.9-21.9 at 4, 20.6-24.2 at 8); as the node runs them, two threads at once, four were faster (100 slices
#: 3.02-3.17 s against 3.12-3.28 in alternating runs): half the decoder runs and numpy calls, each of which hands
#: the GIL over between the threads. A GPU gains from each run it is spared.
CPU_SEARCH_BATCH = 4
GPU_SEARCH_BATCH = 64
DECODER_BATCH = 640
#: Decoded segmentation probabilities above this are myocardium.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class QualityEstimate:
    """Predicted myocardium Dice of a segmentation, the estimates it is made of, and what the search did.

    ``predicted_dice`` is the lower of ``autoencoder_dice`` and ``augmentation_agreement`` (the latter NaN when
    the segmentation model was not given). ``doubts`` are reasons in words to doubt the contours whatever the
    predicted Dice (inference/plausibility.py); they are added by the slice analysis.
    """

    predicted_dice: float
    reconstruction_error: float  # mean squared error of the nearest good pair against the given pair
    evaluations: int  # latents the search decoded
    autoencoder_dice: float = float("nan")  # the latent search's calibrated Dice
    augmentation_agreement: float = float("nan")  # Dice of the segmentation with the mirrored map's segmentation
    doubts: tuple[str, ...] = ()


@dataclass(frozen=True)
class SearchResult:
    """The nearest good pair the latent search found, on the crop grid."""

    latent: np.ndarray  # (8,)
    reconstruction: np.ndarray  # (2, 96, 96): map, segmentation probability
    objective: float
    evaluations: int


def search_evaluations(latent_size: int) -> int:
    """Latents a search decodes for a latent space of ``latent_size`` dimensions."""
    return len(JACOBIAN_AT) * latent_size + 1 + SEARCH_STEPS


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


def search_latent(pair: np.ndarray, encoder: Model, decoder: Model) -> SearchResult:
    """Search the latent space, from the encoder's mean, for the decoded pair nearest ``pair`` (2, 96, 96)."""
    return search_latents(pair[np.newaxis], encoder, decoder)[0]


def search_latents(pairs: np.ndarray, encoder: Model, decoder: Model) -> list[SearchResult]:
    """:func:`search_latent` of every pair in ``pairs`` (N, 2, rows, columns), the searches advanced together.

    Every search takes the same steps (:data:`SEARCH_STEPS`, the Jacobian at :data:`JACOBIAN_AT`), so at each step
    the latents of a batch of them (:data:`CPU_SEARCH_BATCH`, :data:`GPU_SEARCH_BATCH`) go through the decoder in
    one run; a search's
    course depends on its own pair only, so each finds what it finds alone, up to the decoder's rounding in a
    larger batch.
    """
    pairs = np.asarray(pairs, dtype=np.float32)
    if pairs.ndim != 4 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must be (N, 2, rows, columns), got shape {pairs.shape}")
    found: list[SearchResult] = []
    batch = GPU_SEARCH_BATCH if decoder.on_gpu else CPU_SEARCH_BATCH
    for first in range(0, len(pairs), batch):
        chunk = pairs[first:first + batch]
        starts = encoder.run({"pair": chunk}, ["mean"])["mean"].astype(np.float64)
        found.extend(_search(chunk, starts, decoder))
    return found


def _decode(decoder: Model, latents: np.ndarray) -> np.ndarray:
    """(..., size) latents to (..., 2, rows, columns) pairs, :data:`DECODER_BATCH` latents per run."""
    flat = latents.reshape(-1, latents.shape[-1]).astype(np.float32)
    decoded = np.concatenate([decoder.run({"latent": flat[i:i + DECODER_BATCH]}, ["reconstruction"])["reconstruction"]
                              for i in range(0, len(flat), DECODER_BATCH)])
    return decoded.reshape(*latents.shape[:-1], *decoded.shape[1:])


def _search(pairs: np.ndarray, starts: np.ndarray, decoder: Model) -> list[SearchResult]:
    """Levenberg-Marquardt from ``starts`` (N, size) on each objective's residuals (a weighted sum of squares).

    At the steps in :data:`JACOBIAN_AT` each latent and its perturbed copies (one per dimension) are decoded, which
    gives the Jacobian by forward differences; between them each step decodes its trial latent alone and Broyden's
    rank-one update keeps the Jacobian current. The best latent met stands.
    """
    n, size = starts.shape
    pixels = pairs.shape[-1] * pairs.shape[-2]
    weights = np.stack([IMAGE_WEIGHT * image_window(pairs.shape[-1], IMAGE_WINDOW_SIGMA_PX),
                        np.full(pairs.shape[-2:], MASK_WEIGHT, dtype=np.float32)])
    # float32 throughout the residuals and Jacobians: the decoder's output is float32, and these arrays are the
    # search's memory traffic; the (size, size) systems are solved in float64.
    scale = np.sqrt(weights / pixels).ravel().astype(np.float32)
    prior_scale = np.float32(np.sqrt(PRIOR_WEIGHT / size))
    targets = pairs.reshape(n, -1)
    around = np.vstack([np.zeros(size), DIFFERENCE_STEP * np.eye(size)])

    def residuals(latents: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        """(n, k, size) latents and their decoded pairs to (n, k, pixels + size) residuals."""
        values = np.empty((n, latents.shape[1], scale.size + size), dtype=np.float32)
        image = values[:, :, :scale.size]  # written in place: these arrays are the search's main memory traffic
        np.subtract(decoded.reshape(n, latents.shape[1], -1), targets[:, np.newaxis], out=image)
        image *= scale
        np.multiply(prior_scale, latents, out=values[:, :, scale.size:])
        return values

    def keep_best(better: np.ndarray, values: np.ndarray, latents: np.ndarray, decoded: np.ndarray) -> None:
        best_objective[better] = values[better]
        best_latent[better] = latents[better]
        best_reconstruction[better] = decoded[better]

    latent = starts.astype(np.float64)
    best_objective = np.full(n, np.inf)
    best_latent = latent.copy()
    best_reconstruction = np.zeros(pairs.shape, dtype=np.float32)
    residual = np.zeros((n, 0), dtype=np.float32)
    # Each Jacobian transposed: rows contiguous for the products below.
    jacobian_t = np.zeros((n, size, 0), dtype=np.float32)
    objective = np.full(n, np.inf)
    damping = np.full(n, INITIAL_DAMPING)
    evaluations = 0
    normal = np.zeros((n, size, size))
    for step in range(SEARCH_STEPS):
        if step in JACOBIAN_AT:
            # After the first step the current latent's residual is known (it was decoded as an accepted trial or
            # as the start): only its perturbed copies are decoded.
            first = step == 0
            latents = latent[:, np.newaxis] + (around if first else around[1:])
            decoded = _decode(decoder, latents)
            evaluations += latents.shape[1]
            values = residuals(latents, decoded)
            if first:
                residual = values[:, 0].copy()
                objective = _squared_norms(residual)
                keep_best(objective < best_objective, objective, latent, decoded[:, 0])
            jacobian_t = values[:, 1:] if first else values
            jacobian_t -= residual[:, np.newaxis]
            jacobian_t /= np.float32(DIFFERENCE_STEP)
            normal = np.stack([np.dot(one, one.T) for one in jacobian_t]).astype(np.float64)
        diagonal = np.einsum("nii->ni", normal)
        damped = normal + np.einsum("ni,ij->nij", damping[:, np.newaxis] * diagonal + 1e-12, np.eye(size))
        gradient = _products(jacobian_t, residual)[:, :, np.newaxis].astype(np.float64)
        delta = np.linalg.solve(damped, -gradient)[:, :, 0]
        trial = latent + delta
        decoded = _decode(decoder, trial[:, np.newaxis])
        evaluations += 1
        trial_residual = residuals(trial[:, np.newaxis], decoded)[:, 0]
        trial_objective = _squared_norms(trial_residual)
        # Broyden: each Jacobian now explains the step it took.
        length = np.einsum("ni,ni->n", delta, delta)
        moved = length > 0
        step_32 = delta.astype(np.float32)
        change = trial_residual - residual - np.stack([np.dot(one, jacobian) for one, jacobian in
                                                       zip(step_32, jacobian_t, strict=True)])
        direction = (delta / np.where(moved, length, 1.0)[:, np.newaxis]).astype(np.float32)
        # The normal matrix follows the rank-one update without the product of the whole Jacobians:
        # (J + d c)(J + d c)' = J J' + (J c) d' + d (J c)' + (c . c) d d'.
        along = _products(jacobian_t, change).astype(np.float64)
        direction_64 = direction.astype(np.float64)
        cross = along[:, :, np.newaxis] * direction_64[:, np.newaxis]
        normal += cross + cross.transpose(0, 2, 1) + (_squared_norms(change)[:, np.newaxis, np.newaxis]
                                                      * direction_64[:, :, np.newaxis] * direction_64[:, np.newaxis])
        jacobian_t += direction[:, :, np.newaxis] * change[:, np.newaxis]  # direction 0 where a search did not move
        accepted = trial_objective < objective  # then trust the linear model more
        latent[accepted], residual[accepted], objective[accepted] = (trial[accepted], trial_residual[accepted],
                                                                     trial_objective[accepted])
        damping = np.where(accepted, np.maximum(damping / 3.0, MIN_DAMPING), damping * 4.0)
        keep_best(accepted & (trial_objective < best_objective), trial_objective, trial, decoded[:, 0])
    return [SearchResult(latent=best_latent[i], reconstruction=best_reconstruction[i],
                         objective=float(best_objective[i]), evaluations=evaluations) for i in range(n)]


def _products(jacobians_t: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(n, size) products of each (size, r) transposed Jacobian with its (r,) vector.

    One BLAS call per search, as are the other products of the search: numpy holds the GIL through a stacked
    matmul, but not through a 2-D dot, and the node analyses slices in parallel threads.
    """
    return np.stack([np.dot(jacobian, vector) for jacobian, vector in zip(jacobians_t, vectors, strict=True)])


def _squared_norms(rows: np.ndarray) -> np.ndarray:
    """Squared norm of each row of float32 residuals (n, r), summed in float64: the objectives that are compared."""
    return np.einsum("nr,nr->n", rows, rows, dtype=np.float64)


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


def mirror_agreement(myocardium_mask: np.ndarray, mirrored: Segmentation) -> float:
    """The Dice of ``myocardium_mask`` with the segmentation of the left-right mirrored map, mirrored back
    (inference/segmentation.py ``mirrored_segmentations``)."""
    return mask_dice(np.asarray(myocardium_mask, dtype=bool), mirrored.myocardium_mask)


def augmentation_agreement(map_values: np.ndarray, myocardium_mask: np.ndarray,
                           pixel_spacing_mm: tuple[float, float], segmentation_model: Model) -> float:
    """The Dice of ``myocardium_mask`` with the model's myocardium on the left-right mirrored map (mirrored back);
    1 for a model that answers the same whichever way the heart faces."""
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    return mirror_agreement(myocardium_mask, mirrored_segmentations([map_values], [spacing], segmentation_model)[0])


def predict_dice(map_values: np.ndarray, myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | float,
                 encoder: Model, decoder: Model, *, lv_centre_px: tuple[float, float] | None = None,
                 segmentation_model: Model | None = None) -> QualityEstimate:
    """Predicted Dice of ``myocardium_mask`` against the (unknown) true myocardium of ``map_values``.

    ``map_values`` is the T1 or T2 map in ms on the source pixels, ``myocardium_mask`` the segmentation on the same
    pixels, ``pixel_spacing_mm`` (row, column). An empty segmentation has a predicted Dice of 0 (no search). With
    ``segmentation_model`` (the model that drew the mask) the prediction is bounded by
    :func:`augmentation_agreement`.
    """
    agreement = float("nan")
    if segmentation_model is not None and np.any(myocardium_mask):
        spacing = pixel_spacing_mm if isinstance(pixel_spacing_mm, tuple) else (pixel_spacing_mm, pixel_spacing_mm)
        agreement = augmentation_agreement(map_values, myocardium_mask, spacing, segmentation_model)
    return predict_dices([QualityInput(map_values, myocardium_mask, pixel_spacing_mm, lv_centre_px, agreement)],
                         encoder, decoder)[0]


@dataclass(frozen=True)
class QualityInput:
    """One segmentation to judge (see :func:`predict_dice`); ``agreement`` from :func:`mirror_agreement`, NaN when
    the segmentation model is not known."""

    map_values: np.ndarray
    myocardium_mask: np.ndarray
    pixel_spacing_mm: tuple[float, float] | float
    lv_centre_px: tuple[float, float] | None = None
    agreement: float = float("nan")


def predict_dices(items: Sequence[QualityInput], encoder: Model, decoder: Model) -> list[QualityEstimate]:
    """:func:`predict_dice` of several segmentations, their latent searches advanced together
    (:func:`search_latents`)."""
    masks = [np.asarray(item.myocardium_mask, dtype=bool) for item in items]
    searched = [index for index, mask in enumerate(masks) if mask.any()]
    pairs = [crop_pair(items[i].map_values, masks[i], items[i].pixel_spacing_mm, items[i].lv_centre_px)
             for i in searched]
    searches = dict(zip(searched, search_latents(np.stack(pairs), encoder, decoder), strict=True)) if pairs else {}
    pair_of = dict(zip(searched, pairs, strict=True))
    calibration = decoder.card.raw.get("calibration")
    estimates = []
    for index, item in enumerate(items):
        if index not in searches:
            estimates.append(QualityEstimate(predicted_dice=0.0, reconstruction_error=float("nan"), evaluations=0,
                                             autoencoder_dice=0.0))
            continue
        search, pair = searches[index], pair_of[index]
        autoencoder = calibrate(raw_dice(search, pair), calibration)
        estimates.append(QualityEstimate(
            predicted_dice=float(np.nanmin([autoencoder, item.agreement])),
            reconstruction_error=float(np.mean((search.reconstruction - pair) ** 2)),
            evaluations=search.evaluations,
            autoencoder_dice=autoencoder,
            augmentation_agreement=float(item.agreement),
        ))
    return estimates
