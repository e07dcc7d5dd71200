"""Myocardium segmentation of a T1 or T2 map by the segmentation model (background / LV cavity / myocardium).

The map is resampled onto the segmentation grid (inference/grids.py: 128 x 128 pixels of 1.25 mm around the image
centre) and normalised, the model gives class logits there, and their softmax probabilities are resampled back
onto the map's own pixels before the per-pixel decision, so the masks follow the map's resolution rather than the
grid's (resampled only around the heart, where a class other than the background may win). The masks are then
cleaned so that contour fitting gets one ring: the largest myocardium component, and the cavity it encloses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.errors import AnalysisError
from inference.grids import SEGMENTATION_SIZE, Grid, finite_or_zero, image_centre_grid, normalise_map, sample, to_source
from inference.masks import enclosed, mask_window
from inference.runtime import Model

BACKGROUND, CAVITY, MYOCARDIUM = 0, 1, 2
INPUT_NAME = "map"
OUTPUT_NAME = "logits"
#: Maps run through the model together. On the CPU a map costs least in batches of 2-4 (9 ms against 11 ms alone);
#: from 8 on the activations leave the caches and each map costs 14-22 ms.
MAX_BATCH = 4
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class Segmentation:
    """The model's segmentation on the map's own pixels."""

    cavity_mask: np.ndarray  # (rows, columns) bool, LV blood pool with papillary muscles
    myocardium_mask: np.ndarray  # (rows, columns) bool


def segment_map(map_values: np.ndarray, pixel_spacing_mm: tuple[float, float], model: Model) -> Segmentation:
    """Segment one T1 or T2 map.

    Parameters
    ----------
    map_values
        (rows, columns) map in ms; NaN and 0 mark pixels without a value.
    pixel_spacing_mm
        (row, column) spacing in mm, as DICOM PixelSpacing.
    model
        The segmentation model (input ``map`` [N, 1, 128, 128], output ``logits`` [N, 3, 128, 128]).

    Raises
    ------
    AnalysisError
        If the map is not 2-D or the spacing is not two positive numbers.
    """
    return segment_maps([map_values], [pixel_spacing_mm], model)[0]


def segment_maps(maps: Sequence[np.ndarray], pixel_spacings_mm: Sequence[tuple[float, float]],
                 model: Model) -> list[Segmentation]:
    """Segment several maps (any shapes and spacings) with batched model runs; one :class:`Segmentation` each.

    Raises
    ------
    AnalysisError
        If the lists differ in length, a map is not 2-D or a spacing is not two positive numbers.
    """
    values, grids, inputs = _grid_inputs(maps, pixel_spacings_mm)
    return _segment_grid_inputs(inputs, grids, [item.shape for item in values], model)


def mirrored_segmentations(maps: Sequence[np.ndarray], pixel_spacings_mm: Sequence[tuple[float, float]],
                           model: Model) -> list[Segmentation]:
    """For each map, the segmentation of its left-right mirrored copy, mirrored back onto the map's own
    orientation: the test-time augmentation of the QC (inference/quality.py ``mirror_agreement``).

    The segmentation grid is centred on the image, so the mirrored map's grid is the map's grid mirrored: each map
    is resampled once and mirrored on the grid, and the model's logits are mirrored back there. The masks are those
    of :func:`segment_maps` of the mirrored maps, mirrored back, up to rounding.
    """
    values, grids, inputs = _grid_inputs(maps, pixel_spacings_mm)
    if not values:
        return []
    # Columns: axis 2 of the (N, rows, columns) inputs.
    return _segment_grid_inputs(np.ascontiguousarray(inputs[:, :, ::-1]), grids, [item.shape for item in values],
                                model, mirrored_axes=(2,))


def _grid_inputs(maps: Sequence[np.ndarray], pixel_spacings_mm: Sequence[tuple[float, float]]
                 ) -> tuple[list[np.ndarray], list[Grid], np.ndarray]:
    """The checked maps, their segmentation grids and the model's (N, 128, 128) normalised inputs."""
    if len(maps) != len(pixel_spacings_mm):
        raise AnalysisError(f"got {len(maps)} maps but {len(pixel_spacings_mm)} pixel spacings")
    values = [_check_map(item) for item in maps]
    grids = [image_centre_grid(item.shape, _check_spacing(spacing)) for item, spacing in
             zip(values, pixel_spacings_mm, strict=True)]
    inputs = np.stack([normalise_map(sample(item, grid)) for item, grid in zip(values, grids, strict=True)]) \
        if values else np.zeros((0, SEGMENTATION_SIZE, SEGMENTATION_SIZE), dtype=np.float32)
    return values, grids, inputs


def _segment_grid_inputs(inputs: np.ndarray, grids: Sequence[Grid], shapes: Sequence[tuple[int, int]], model: Model,
                         mirrored_axes: tuple[int, ...] = ()) -> list[Segmentation]:
    """Run the model on grid inputs, :data:`MAX_BATCH` at a time, and decide on each map's pixels. With
    ``mirrored_axes`` the inputs cycle through mirrorings along those axes of an input ((1: rows, 2: columns)), and
    each one's logits are mirrored back before the decision."""
    results = []
    for start in range(0, len(inputs), MAX_BATCH):
        batch = np.ascontiguousarray(inputs[start:start + MAX_BATCH, None])
        logits = model.run({INPUT_NAME: batch}, [OUTPUT_NAME])[OUTPUT_NAME]
        if mirrored_axes:  # (batch, classes, rows, columns): an input's axis k is the logits' axis k + 1
            logits = np.stack([np.flip(one, axis=mirrored_axes[(start + offset) % len(mirrored_axes)])
                               for offset, one in enumerate(logits)])
        for offset, grid_probabilities in enumerate(softmax(logits, axis=1)):
            index = start + offset
            results.append(segmentation_from_grid(grid_probabilities, grids[index], shapes[index]))
    return results


def map_probabilities(map_values: np.ndarray, pixel_spacing_mm: tuple[float, float], model: Model) -> np.ndarray:
    """The model's (3, rows, columns) float32 class probabilities (background, cavity, myocardium) on the map's
    pixels, from which :func:`segment_map` decides.

    Raises
    ------
    AnalysisError
        As :func:`segment_map`.
    """
    values, grids, inputs = _grid_inputs([map_values], [pixel_spacing_mm])
    logits = model.run({INPUT_NAME: np.ascontiguousarray(inputs[:, None])}, [OUTPUT_NAME])[OUTPUT_NAME]
    return source_probabilities(softmax(logits, axis=1)[0], grids[0], values[0].shape)


def check_input(map_values: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> None:
    """Raise the :class:`AnalysisError` that :func:`segment_maps` would raise for this map and spacing."""
    _check_map(map_values)
    _check_spacing(pixel_spacing_mm)


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(np.float32)


def source_probabilities(grid_probabilities: np.ndarray, grid: Grid, shape: tuple[int, int],
                         box: tuple[slice, slice] | None = None) -> np.ndarray:
    """(3, size, size) grid probabilities on the source pixels (of ``box`` only, when given); where the grid does
    not reach (or only partly, at its edge) the missing weight goes to the background, so every pixel's
    probabilities sum to 1."""
    probabilities = to_source(grid_probabilities, grid, shape, box)
    probabilities[BACKGROUND] = 1.0 - probabilities[CAVITY] - probabilities[MYOCARDIUM]
    return probabilities


def segmentation_from_grid(grid_probabilities: np.ndarray, grid: Grid, shape: tuple[int, int]) -> Segmentation:
    """:func:`segmentation_from_probabilities` of the grid's probabilities on the source pixels, resampled only in
    the box where a class other than the background may win (:func:`_decision_box`): the same masks, without
    resampling the whole field the grid covers."""
    cavity, myocardium = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    box = _decision_box(grid_probabilities, grid, shape)
    if box is not None:
        found = segmentation_from_probabilities(source_probabilities(grid_probabilities, grid, shape, box))
        cavity[box], myocardium[box] = found.cavity_mask, found.myocardium_mask
    return Segmentation(cavity_mask=cavity, myocardium_mask=myocardium)


def _decision_box(grid_probabilities: np.ndarray, grid: Grid, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The source pixels where the cavity or the myocardium may win, with a margin where neither can; None when
    there are none.

    A source pixel's probabilities interpolate the four grid pixels around it, so its cavity and myocardium shares
    together are at most the largest of theirs: only grid pixels whose two shares exceed
    :data:`GRID_CANDIDATE_ABOVE` count. The box spans the source pixels between the grid rows and columns next to
    theirs, and one more pixel each way: pixels whose neighbours on the grid are none of them.
    """
    candidates = grid_probabilities[CAVITY] + grid_probabilities[MYOCARDIUM] > GRID_CANDIDATE_ABOVE
    window = mask_window(candidates)
    if window is None:
        return None
    rows, columns = grid.source_axes()
    box = (_source_span(rows, window[0], shape[0]), _source_span(columns, window[1], shape[1]))
    return box if all(part.start < part.stop for part in box) else None


def _source_span(positions: np.ndarray, window: slice, length: int) -> slice:
    """The source pixels from one below the first to one beyond the last of the grid positions in ``window``."""
    return slice(max(int(np.floor(positions[window.start])) - 1, 0),
                 min(int(np.ceil(positions[window.stop - 1])) + 2, length))


def segmentation_from_probabilities(probabilities: np.ndarray) -> Segmentation:
    """Per-pixel decision, then one ring: the largest myocardium component and the cavity it encloses.

    Holes of that component other than the cavity (specks inside the wall) become myocardium. When the ring is
    open, the cavity is the largest cavity component touching the myocardium; contour fitting bridges the gap.
    """
    shape = probabilities.shape[1:]
    window = _undecided_window(probabilities[BACKGROUND])
    cavity, myocardium = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    if window is not None:
        cavity[window], myocardium[window] = _ring(probabilities[(slice(None), *window)])
    return Segmentation(cavity_mask=cavity, myocardium_mask=myocardium)


#: Where the background holds more than this share, neither the cavity nor the myocardium can be the most probable
#: class (their shares sum to less than the background's; a little above one half for the float32 rounding).
UNDECIDED_BELOW = 0.51
#: Grid pixels whose cavity and myocardium shares together exceed this may make a source pixel near them one of
#: the two (below 1 - UNDECIDED_BELOW, with room for the interpolation's float32 rounding).
GRID_CANDIDATE_ABOVE = 0.45


def _undecided_window(background: np.ndarray) -> tuple[slice, slice] | None:
    """The box of pixels where a class other than the background may win, with a margin of one pixel inside the
    image; None when there is none. Outside it every pixel is background, so the ring found in the box is the ring
    found in the whole image: the margin keeps a border of background around it, as the image's rest would, and a
    component reaching the box's edge reaches the image's edge. The box is the heart's, not the whole field the
    segmentation grid covers (where the background's share is just short of 1)."""
    return mask_window(background < UNDECIDED_BELOW)


def _ring(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cavity, myocardium) masks of :func:`segmentation_from_probabilities` on (3, rows, columns) probabilities."""
    background, cavity_p, myocardium_p = probabilities
    # The most probable class, the first on a tie (as argmax): cheaper than argmax over a strided class axis.
    myocardium = largest_component((myocardium_p > background) & (myocardium_p > cavity_p))
    if not myocardium.any():
        return np.zeros(myocardium.shape, dtype=bool), myocardium
    predicted_cavity = (cavity_p > background) & (cavity_p >= myocardium_p)
    holes = enclosed(myocardium)
    if holes.any():
        hole_labels, count = ndimage.label(holes)
        overlap = np.bincount(hole_labels.ravel(), weights=predicted_cavity.ravel(), minlength=count + 1)[1:]
        sizes = np.bincount(hole_labels.ravel(), minlength=count + 1)[1:]
        index = np.arange(1, count + 1)
        # The cavity hole holds the predicted cavity; size decides when no hole does.
        best = int(index[np.lexsort((sizes, overlap))[-1]])
        cavity = hole_labels == best
        myocardium = myocardium | (holes & ~cavity)
    else:
        touching = predicted_cavity & ndimage.binary_dilation(myocardium, structure=_EIGHT_CONNECTED)
        cavity_labels, _ = ndimage.label(predicted_cavity, structure=_EIGHT_CONNECTED)
        kept = np.unique(cavity_labels[touching])
        cavity = largest_component(np.isin(cavity_labels, kept[kept > 0]))
    return cavity, myocardium


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a mask (all False when the mask is empty)."""
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _check_map(map_values: np.ndarray) -> np.ndarray:
    values = np.asarray(map_values)
    if values.ndim != 2 or min(values.shape) < 2:
        raise AnalysisError(f"map_values must be a 2-D map of at least 2 x 2 pixels, got shape {values.shape}")
    return finite_or_zero(values)


def _check_spacing(pixel_spacing_mm: tuple[float, float]) -> tuple[float, float]:
    try:
        spacing = np.asarray(pixel_spacing_mm, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        spacing = np.array([np.nan])
    if spacing.shape != (2,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise AnalysisError(f"pixel_spacing_mm must be two positive numbers (row, column), got {pixel_spacing_mm}")
    return float(spacing[0]), float(spacing[1])
