"""The expert-consensus myocardium drawn by the consensus model from one reader's contour and the map.

The model reads the map and the reader's myocardium on the crop grid (inference/grids.py, 96 x 96 pixels of
1.25 mm) centred on the reader's filled myocardium (the ring and its cavity), and returns the myocardium the
experts converge to. Its probability goes back to the map's own pixels, is thresholded at one half, and only the
largest connected part is kept, so a stray island never counts as myocardium.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from inference.errors import AnalysisError, ShapeMismatchError
from inference.grids import Grid, lv_grid, mask_centre_px, normalise_map, sample, sample_mask, to_source
from inference.runtime import Model

LOGGER = logging.getLogger(__name__)

INPUT_NAME = "pair"
OUTPUT_NAME = "consensus_logits"
PROBABILITY_THRESHOLD = 0.5


def reader_centre_px(reader_myocardium_mask: np.ndarray) -> tuple[float, float]:
    """Centre (x, y) of the crop: the centroid of the reader's myocardium with its cavity filled in.

    Raises
    ------
    AnalysisError
        If the mask is empty.
    """
    mask = np.asarray(reader_myocardium_mask, dtype=bool)
    if not mask.any():
        raise AnalysisError("the reader's myocardium mask is empty; there is no contour to bring to the consensus")
    return mask_centre_px(ndimage.binary_fill_holes(mask))


def consensus_pair(map_values: np.ndarray, reader_myocardium_mask: np.ndarray,
                   pixel_spacing_mm: tuple[float, float] | float) -> tuple[np.ndarray, Grid]:
    """The model's input (1, 2, 96, 96) (normalised map, reader's mask) and the crop grid it lies on.

    Raises
    ------
    ShapeMismatchError
        If the map is not 2-D or the mask does not have the map's shape.
    AnalysisError
        If the mask is empty.
    """
    values = np.asarray(map_values)
    mask = np.asarray(reader_myocardium_mask)
    if values.ndim != 2:
        raise ShapeMismatchError(f"the map must be 2-D (rows, columns), got shape {values.shape}")
    if mask.shape != values.shape:
        raise ShapeMismatchError(f"the reader's mask has shape {mask.shape}, the map {values.shape}")
    grid = lv_grid(reader_centre_px(mask), pixel_spacing_mm)
    pair = np.stack([normalise_map(sample(values, grid)), sample_mask(mask.astype(bool), grid).astype(np.float32)])
    return pair[np.newaxis].astype(np.float32), grid


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected part of a mask (the mask itself when it is empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def expert_consensus_mask(map_values: np.ndarray, reader_myocardium_mask: np.ndarray,
                          pixel_spacing_mm: tuple[float, float] | float, model: Model) -> np.ndarray:
    """The expert-consensus myocardium (bool, the map's pixels) from one reader's myocardium and the map.

    ``map_values`` is the T1 or T2 map (any unit: it is normalised per crop), ``pixel_spacing_mm`` its
    PixelSpacing (row, column) or one spacing for both.

    Raises
    ------
    ShapeMismatchError
        If the map is not 2-D or the mask does not have the map's shape.
    AnalysisError
        If the reader's mask is empty.
    """
    pair, grid = consensus_pair(map_values, reader_myocardium_mask, pixel_spacing_mm)
    logits = model.run({INPUT_NAME: pair}, [OUTPUT_NAME])[OUTPUT_NAME][0, 0]
    probability = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60.0, 60.0)))
    on_source = to_source(probability, grid, np.asarray(map_values).shape)
    consensus = largest_component(on_source >= PROBABILITY_THRESHOLD)
    if not consensus.any():
        LOGGER.warning("the consensus model found no myocardium near the reader's contour")
    return consensus
