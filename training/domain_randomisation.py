"""Augmentations that make the segmentation model read anatomy rather than the phantom's appearance.

Domain randomisation after SynthSeg (Billot et al., "SynthSeg: segmentation of brain MRI scans of any contrast
and resolution without retraining", Medical Image Analysis 2023): every label region gets a random mean intensity
and noise level, then a random bias field, blur (partial volume) and gamma, so that no contrast, noise or
resolution is a cue the model can learn; only shapes and borders remain. The phantom's grids carry only
background, cavity and myocardium labels, so the background is split into intensity classes of the image itself
(its quantiles: lung, blood of the other chambers, liver, fat...), each randomised on its own.

Geometry: random rotation (any angle), isotropic scale 0.7-1.4 with a little anisotropy, translation, a smooth
random elastic deformation, and a flip, applied to image and labels together on the 128 x 128 segmentation grid
(image bilinear, labels nearest).

All functions take and return grids of inference/grids.py (normalised images, uint8 labels) and draw from the
``numpy.random.Generator`` they are given, so a seed fixes a run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.grids import NORMALISATION_PERCENTILES

#: Labels: background, cavity, myocardium, and "not cavity, class unknown" (training/sunnybrook.py).
BACKGROUND, CAVITY, MYOCARDIUM, NOT_CAVITY = 0, 1, 2, 3


@dataclass(frozen=True)
class GeometryRange:
    """Ranges of the random geometric transform."""

    scale: tuple[float, float] = (0.7, 1.4)
    anisotropy: float = 0.1  # each axis scaled by a further U(1 - a, 1 + a)
    translation_px: float = 12.0
    elastic_px: float = 3.0  # standard deviation of the coarse displacements
    elastic_points: int = 5  # the displacement field is drawn on this many points per axis, then smoothed


@dataclass(frozen=True)
class AppearanceRange:
    """Ranges of the random appearance (SynthSeg-style) on the normalised 0..1 scale."""

    background_classes: tuple[int, int] = (3, 7)
    noise_sd: tuple[float, float] = (0.0, 0.12)
    blur_sigma_px: tuple[float, float] = (0.0, 1.2)
    bias_strength: float = 0.4  # log-amplitude of the smooth multiplicative field
    gamma_log_sd: float = 0.3
    #: Blood is brighter than myocardium in T1 and T2 maps and in cine SSFP; the opposite is drawn this often.
    reversed_polarity: float = 0.1
    min_contrast: float = 0.2  # |mean(cavity) - mean(myocardium)| at least this much


def random_geometry(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                    ranges: GeometryRange = GeometryRange()) -> tuple[np.ndarray, np.ndarray]:
    """Rotate, scale, translate, deform elastically and maybe flip an image and its labels about the grid centre.

    Where the transform samples outside the grid, the image is 0 and the label BACKGROUND.
    """
    size_r, size_c = image.shape
    angle = rng.uniform(0.0, 2.0 * np.pi)
    scale = rng.uniform(*ranges.scale) * rng.uniform(1.0 - ranges.anisotropy, 1.0 + ranges.anisotropy, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    # Output pixel -> source pixel: inverse of (scale then rotate).
    matrix = np.array([[cos, -sin], [sin, cos]]) / scale[:, None]
    flip = rng.random() < 0.5
    if flip:
        matrix = matrix @ np.diag([1.0, -1.0])
    centre = np.array([(size_r - 1) / 2.0, (size_c - 1) / 2.0])
    shift = rng.normal(0.0, ranges.translation_px / 2.0, size=2).clip(-ranges.translation_px, ranges.translation_px)
    rows, columns = np.mgrid[0:size_r, 0:size_c].astype(np.float64)
    offsets = np.stack([rows - centre[0] - shift[0], columns - centre[1] - shift[1]])
    coordinates = np.einsum("ij,jrc->irc", matrix, offsets) + centre[:, None, None]
    if ranges.elastic_px > 0:
        coarse = rng.normal(0.0, ranges.elastic_px, size=(2, ranges.elastic_points, ranges.elastic_points))
        zoom = (size_r / ranges.elastic_points, size_c / ranges.elastic_points)
        coordinates += np.stack([ndimage.zoom(field, zoom, order=3)[:size_r, :size_c] for field in coarse])
    warped = ndimage.map_coordinates(image.astype(np.float32), coordinates, order=1, mode="constant", cval=0.0)
    warped_labels = ndimage.map_coordinates(labels, coordinates, order=0, mode="constant", cval=BACKGROUND)
    return warped.astype(np.float32), warped_labels.astype(np.uint8)


def intensity_classes(image: np.ndarray, labels: np.ndarray, n_background: int) -> np.ndarray:
    """Label regions for randomisation: 0..n_background-1 are intensity quantile classes of the background (and
    of pixels of unknown class), n_background the cavity, n_background + 1 the myocardium."""
    classes = np.empty(labels.shape, dtype=np.int64)
    other = (labels == BACKGROUND) | (labels == NOT_CAVITY)
    values = image[other]
    if values.size:
        edges = np.quantile(values, np.linspace(0.0, 1.0, n_background + 1)[1:-1])
        classes[other] = np.searchsorted(edges, values)
    classes[labels == CAVITY] = n_background
    classes[labels == MYOCARDIUM] = n_background + 1
    return classes


def bias_field(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field exp(f), f drawn on a 4 x 4 lattice and interpolated cubically."""
    coarse = rng.normal(0.0, strength / 2.0, size=(4, 4))
    field = ndimage.zoom(coarse, (shape[0] / 4, shape[1] / 4), order=3)[:shape[0], :shape[1]]
    return np.exp(field).astype(np.float32)


def renormalise(image: np.ndarray) -> np.ndarray:
    """As inference.grids.normalise_map on the grid: percentiles 1 and 99 of the non-zero pixels to 0 and 1,
    clipped to [-0.5, 1.5]."""
    selected = image[image != 0]
    if selected.size < 16:
        return np.zeros_like(image, dtype=np.float32)
    low, high = np.percentile(selected, NORMALISATION_PERCENTILES)
    scale = float(high - low) if high > low else 1.0
    return np.clip((image - low) / scale, -0.5, 1.5).astype(np.float32)


def random_appearance(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                      ranges: AppearanceRange = AppearanceRange()) -> np.ndarray:
    """A new image of the same anatomy: per-region random mean and noise, blur, bias field, gamma, renormalised.

    Pixels outside the source image (where the geometric transform filled in 0, labelled background) are set to 0
    before the renormalisation, as the node's grids are 0 outside the map before inference.grids.normalise_map.
    """
    n_background = int(rng.integers(ranges.background_classes[0], ranges.background_classes[1] + 1))
    classes = intensity_classes(image, labels, n_background)
    means = rng.uniform(0.0, 1.0, size=n_background + 2)
    cavity, myocardium = n_background, n_background + 1
    blood_brighter = rng.random() >= ranges.reversed_polarity
    bright, dark = sorted(rng.uniform(0.0, 1.0, size=2))[::-1]
    if bright - dark < ranges.min_contrast:
        dark = max(0.0, bright - ranges.min_contrast)
        bright = dark + ranges.min_contrast
    means[cavity], means[myocardium] = (bright, dark) if blood_brighter else (dark, bright)
    noise = rng.uniform(*ranges.noise_sd, size=n_background + 2)
    synthetic = means[classes] + noise[classes] * rng.standard_normal(image.shape)
    sigma = rng.uniform(*ranges.blur_sigma_px)
    if sigma > 0.3:
        synthetic = ndimage.gaussian_filter(synthetic, sigma)
    synthetic = synthetic * bias_field(image.shape, ranges.bias_strength, rng)
    synthetic = np.clip(synthetic, 0.0, None) ** np.exp(rng.normal(0.0, ranges.gamma_log_sd))
    synthetic = synthetic + 1e-3  # no pixel of the image is exactly 0 ...
    synthetic[(image == 0) & (labels == BACKGROUND)] = 0.0  # ... except outside the source image
    return renormalise(synthetic.astype(np.float32))


def random_intensity(image: np.ndarray, rng: np.random.Generator, *, noise_sd: float = 0.05,
                     bias_strength: float = 0.3, gamma_log_sd: float = 0.25) -> np.ndarray:
    """The image's own appearance, mildly changed: bias field, gamma, noise and blur, renormalised."""
    outside = image == 0
    values = np.clip(image + 0.5, 0.0, None)  # normalised grids reach down to -0.5
    values = values * bias_field(image.shape, bias_strength, rng)
    values = values ** np.exp(rng.normal(0.0, gamma_log_sd))
    if rng.random() < 0.3:
        values = ndimage.gaussian_filter(values, rng.uniform(0.3, 1.0))
    values = values + rng.uniform(0.0, noise_sd) * rng.standard_normal(image.shape)
    values = values + 1e-3
    values[outside] = 0.0
    return renormalise(values.astype(np.float32))
