"""Motion artefact detection per AHA segment from the raw inversion-recovery images, the T1 map and the R2 map.

The motion model (inference/models/motion.json) reads four inputs on the 96 x 96 crop grid centred on the LV
(inference/grids.py): the raw IR images sorted by inversion time and zero-padded to 11, the normalised T1 map, the
fit's R2 map and the slice's AHA segment layout (one channel per position 1-6 within the level). It gives a logit
per segment position, one for the whole image and a class activation map per position, which come back here on the
map's own pixels.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from inference.errors import AnalysisError, ShapeMismatchError
from inference.grids import Grid, lv_grid, normalise_images, normalise_map, sample, to_source
from inference.runtime import Model, ModelContractError

MAX_IR_IMAGES = 11  # MOLLI 5s(3s)3s; MOLLI 5(3)3 has 8 images, ShMOLLI 7
N_SEGMENT_POSITIONS = 6
#: Slices per model run: per slice about the same as one at a time (10-13 ms on the CPU), fewer calls.
MAX_BATCH = 8


@dataclass(frozen=True)
class MotionResult:
    """Motion probabilities per AHA segment and for the whole image, with the model's attention maps."""

    segment_probabilities: dict[int, float]  # AHA segment number -> probability of a motion artefact
    whole_image_probability: float
    attention_maps: Mapping[int, np.ndarray]  # AHA segment -> (rows, columns) float32 in 0..1 on the map's pixels
    threshold: float  # probabilities at or above it count as motion (from the model card)

    @property
    def motion_segments(self) -> tuple[int, ...]:
        """AHA segments with a motion artefact, in order."""
        return tuple(s for s, p in sorted(self.segment_probabilities.items()) if p >= self.threshold)

    @property
    def has_motion(self) -> bool:
        return bool(self.motion_segments) or self.whole_image_probability >= self.threshold


def motion_image_stack(images: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
    """Raw IR images sorted by inversion time and zero-padded to :data:`MAX_IR_IMAGES`; more images than that keep
    the earliest ones."""
    order = np.argsort(np.asarray(times_ms), kind="stable")[:MAX_IR_IMAGES]
    stack = np.zeros((MAX_IR_IMAGES, *images.shape[-2:]), dtype=np.float32)
    stack[: order.size] = images[order]
    return stack


def segment_positions(aha_segment_map: np.ndarray) -> np.ndarray:
    """AHA numbers (1-16) to positions within their level (1-6), 0 outside the myocardium."""
    segments = np.asarray(aha_segment_map, dtype=np.int16)
    positions = np.where(segments > 12, segments - 12, np.where(segments > 6, segments - 6, segments))
    return np.where(segments > 0, positions, 0).astype(np.uint8)


def motion_inputs(images: np.ndarray, times_ms: np.ndarray, t1_map_ms: np.ndarray, r2: np.ndarray,
                  aha_segment_map: np.ndarray, lv_centre_px: tuple[float, float],
                  pixel_spacing_mm: tuple[float, float]) -> dict[str, np.ndarray]:
    """The model's four inputs (batch of one) on the crop grid, as the model card states them.

    Raises
    ------
    AnalysisError
        If fewer than 2 images are given, the inversion times do not match the images, or the maps differ in shape
        from the images.
    """
    stack = np.asarray(images, dtype=np.float32)
    times = np.asarray(times_ms, dtype=np.float64).reshape(-1)
    if stack.ndim != 3:
        raise ShapeMismatchError(f"images must be (n, rows, columns), got shape {stack.shape}")
    if stack.shape[0] < 2:
        raise AnalysisError(f"motion detection needs at least 2 inversion-recovery images, got {stack.shape[0]}")
    if times.size != stack.shape[0]:
        raise ShapeMismatchError(f"{stack.shape[0]} images but {times.size} inversion times")
    if not np.all(np.isfinite(times)):
        raise AnalysisError(f"inversion times must be finite, got {times.tolist()}")
    shape = stack.shape[1:]
    for name, values in (("t1_map_ms", t1_map_ms), ("r2", r2), ("aha_segment_map", aha_segment_map)):
        if np.shape(values) != shape:
            raise ShapeMismatchError(f"{name} has shape {np.shape(values)}, the images are {shape}")
    grid = lv_grid(lv_centre_px, pixel_spacing_mm)
    # Sampled first, then mapped, sorted and padded: the same values, worked out on the grid's pixels only.
    positions = segment_positions(sample(aha_segment_map, grid, order=0).round())
    layout = np.stack([positions == p for p in range(1, N_SEGMENT_POSITIONS + 1)]).astype(np.float32)
    return {
        "ir_images": normalise_images(motion_image_stack(sample(stack, grid), times))[None],
        "t1_map": normalise_map(sample(np.asarray(t1_map_ms, dtype=np.float32), grid))[None, None],
        "r2_map": sample(np.asarray(r2, dtype=np.float32), grid)[None, None],
        "segments": layout[None],
    }


def decision_threshold(model: Model) -> float:
    """The probability threshold the model card states (chosen on validation data when the model was trained)."""
    metrics = model.card.raw.get("metrics")
    threshold = metrics.get("decision_threshold") if isinstance(metrics, dict) else None
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < 1.0:
        raise ModelContractError(f"{model.card.name}: the model card states no decision_threshold in (0, 1)")
    return float(threshold)


def detect_motion(images: np.ndarray, times_ms: np.ndarray, t1_map_ms: np.ndarray, r2: np.ndarray,
                  aha_segment_map: np.ndarray, lv_centre_px: tuple[float, float],
                  pixel_spacing_mm: tuple[float, float], model: Model) -> MotionResult:
    """Motion artefact probability of each AHA segment in ``aha_segment_map`` and of the whole image.

    Parameters
    ----------
    images, times_ms
        (n, rows, columns) raw magnitude images in any order and their inversion times.
    t1_map_ms, r2
        The T1 map and the fit's R2 (0..1) on the same pixels.
    aha_segment_map
        AHA segment numbers on the same pixels, 0 outside the myocardium (inference/aha.py ``aha_segments``).
    lv_centre_px
        (x, y) LV centre; ``pixel_spacing_mm`` is (row, column).

    Raises
    ------
    AnalysisError
        On mismatched shapes, fewer than 2 images, or a model card without a decision threshold.
    """
    return detect_motions([MotionInput(images, times_ms, t1_map_ms, r2, aha_segment_map, lv_centre_px,
                                       pixel_spacing_mm)], model)[0]


@dataclass(frozen=True)
class MotionInput:
    """One slice's arguments of :func:`detect_motion`."""

    images: np.ndarray
    times_ms: np.ndarray
    t1_map_ms: np.ndarray
    r2: np.ndarray
    aha_segment_map: np.ndarray
    lv_centre_px: tuple[float, float]
    pixel_spacing_mm: tuple[float, float]


def detect_motions(items: list[MotionInput], model: Model,
                   inputs: list[dict[str, np.ndarray]] | None = None) -> list[MotionResult]:
    """:func:`detect_motion` of several slices, through the model in batches of :data:`MAX_BATCH`; ``inputs``
    are the items' :func:`motion_inputs` when the caller already has them (it checked them one by one).

    Raises
    ------
    AnalysisError
        As :func:`detect_motion`, for the first slice with bad inputs (check them one by one with
        :func:`motion_inputs` to keep the others).
    """
    threshold = decision_threshold(model)
    if inputs is None:
        inputs = [motion_inputs(item.images, item.times_ms, item.t1_map_ms, item.r2, item.aha_segment_map,
                                item.lv_centre_px, item.pixel_spacing_mm) for item in items]
    elif len(inputs) != len(items):
        raise ValueError(f"{len(items)} slices but {len(inputs)} model inputs")
    results = []
    for start in range(0, len(inputs), MAX_BATCH):
        chunk = inputs[start:start + MAX_BATCH]
        outputs = model.run({name: np.concatenate([one[name] for one in chunk]) for name in chunk[0]})
        for offset, item in enumerate(items[start:start + MAX_BATCH]):
            results.append(_result(item, {name: value[offset:offset + 1] for name, value in outputs.items()},
                                   threshold))
    return results


def _result(item: MotionInput, outputs: dict[str, np.ndarray], threshold: float) -> MotionResult:
    segment_probabilities = _sigmoid(outputs["segment_logits"][0])
    whole = float(_sigmoid(outputs["whole_logit"][0])[0])
    present = [int(s) for s in np.unique(item.aha_segment_map) if 0 < s <= 16]
    indices = [int(segment_positions(np.array(segment))) - 1 for segment in present]
    attention = AttentionMaps(present, outputs["attention"][0, indices],
                              lv_grid(item.lv_centre_px, item.pixel_spacing_mm), np.shape(item.aha_segment_map))
    return MotionResult(segment_probabilities={s: float(segment_probabilities[i])
                                               for s, i in zip(present, indices, strict=True)},
                        whole_image_probability=whole, attention_maps=attention, threshold=threshold)


class AttentionMaps(Mapping[int, np.ndarray]):
    """The model's attention maps by AHA segment, on the crop grid until one is read, then all of them on the map's
    pixels in one resampling (the console draws them only for a slice with motion; most slices never need them)."""

    def __init__(self, segments: list[int], grid_maps: np.ndarray, grid: Grid, shape: tuple[int, ...]) -> None:
        self._segments = segments
        self._grid_maps = grid_maps  # the caller's own copy (picked by index from the batch's outputs)
        self._grid = grid
        self._shape = (int(shape[0]), int(shape[1]))
        self._maps: dict[int, np.ndarray] | None = None
        self._lock = threading.Lock()

    def _resampled(self) -> dict[int, np.ndarray]:
        with self._lock:
            if self._maps is None:
                maps = np.clip(to_source(self._grid_maps, self._grid, self._shape), 0.0, 1.0) if self._segments \
                    else []
                self._maps = {segment: maps[k] for k, segment in enumerate(self._segments)}
            return self._maps

    def __getitem__(self, segment: int) -> np.ndarray:
        return self._resampled()[segment]

    def __iter__(self) -> Iterator[int]:
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def __contains__(self, segment: object) -> bool:
        return segment in self._segments


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
