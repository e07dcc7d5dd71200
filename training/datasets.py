"""Phantom cases on the models' grids, cached as one .npz file per data set.

Each case becomes what the models see (inference/grids.py): the segmentation grid centred on the image, and the
crop grid centred on the LV with a random offset (segmentation never finds the centre exactly). The arrays:

- ``seg_map`` (N, 128, 128) float16 normalised map; ``seg_labels`` (N, 128, 128) uint8 background/cavity/myocardium
- ``crop_map``, ``crop_r2`` (N, 96, 96) float16; ``crop_images`` (N, 11, 96, 96) float16, raw IR images sorted
  by inversion time and zero-padded (zeros for T2-prep); ``crop_labels`` (N, 96, 96) uint8;
  ``crop_segments`` (N, 96, 96) uint8, position 1-6 of the pixel's AHA segment in its level, 0 outside
- ``crop_readers`` (N, 7, 96, 96) bool, 3 experts then 4 trainees; ``reader_modes`` (N, 7) str
- ``motion`` (N, 6) int8: 1/0 per segment position, -1 where the level has no such segment (apical 5-6)
- ``is_t1`` (N,) bool, ``level``, ``field_t``, ``vendor``, ``sequence``, ``anatomy`` (phantom v1/v2) (N,) str,
  ``study`` (N,) int
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from inference.grids import (
    CROP_SIZE,
    image_centre_grid,
    lv_grid,
    mask_centre_px,
    normalise_images,
    normalise_map,
    sample,
    sample_mask,
)
from inference.motion import MAX_IR_IMAGES, N_SEGMENT_POSITIONS, motion_image_stack, segment_positions
from phantom.study import AnatomyVersion
from training.phantom_slices import SliceCase, study_cases

LOGGER = logging.getLogger(__name__)

CENTRE_JITTER_MM = 2.0


def pack_case(case: SliceCase, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One case on the model grids."""
    shape = case.map_ms.shape
    seg_grid = image_centre_grid(shape, case.pixel_spacing_mm)
    heart = case.labels > 0
    centre_x, centre_y = mask_centre_px(heart)
    jitter_mm = rng.normal(0.0, CENTRE_JITTER_MM, size=2)
    centre = (centre_x + jitter_mm[0] / case.pixel_spacing_mm[1], centre_y + jitter_mm[1] / case.pixel_spacing_mm[0])
    crop = lv_grid(centre, case.pixel_spacing_mm)
    motion = np.full(N_SEGMENT_POSITIONS, -1, dtype=np.int8)
    for position, segment in enumerate(case.segments):
        motion[position] = int(case.motion_by_segment[segment])
    images = (normalise_images(sample(motion_image_stack(case.images, case.times_ms), crop)) if case.is_t1
              else np.zeros((MAX_IR_IMAGES, CROP_SIZE, CROP_SIZE), dtype=np.float32))
    return {
        "seg_map": normalise_map(sample(case.map_ms, seg_grid)).astype(np.float16),
        "seg_labels": sample(case.labels, seg_grid, order=0).astype(np.uint8),
        "crop_map": normalise_map(sample(case.map_ms, crop)).astype(np.float16),
        "crop_r2": sample(case.r2, crop).astype(np.float16),
        "crop_images": images.astype(np.float16),
        "crop_labels": sample(case.labels, crop, order=0).astype(np.uint8),
        "crop_segments": sample(segment_positions(case.aha_segments), crop, order=0).astype(np.uint8),
        "crop_readers": np.stack([sample_mask(mask, crop) for mask in case.reader_masks]),
        "reader_modes": np.array(case.reader_error_modes),
        "motion": motion,
        "is_t1": np.array(case.is_t1),
        "level": np.array(case.level.value),
        "field_t": np.array(case.field_t),
        "vendor": np.array(case.vendor),
        "sequence": np.array(case.sequence.value),
        "study": np.array(case.study_index),
    }


def pack_study(seed: int, study_index: int, motion_rate: float = 0.5,
               anatomy: str = AnatomyVersion.V1.value) -> list[dict[str, np.ndarray]]:
    """Every case of one study (phantom ``anatomy`` v1 or v2) on the model grids; the crop offsets are drawn from
    (seed, study)."""
    rng = np.random.default_rng((seed, study_index))
    cases = study_cases(seed, study_index, motion_rate=motion_rate, anatomy=anatomy)
    return [{**pack_case(case, rng), "anatomy": np.array(case.anatomy)} for case in cases]


def _pack_study(arguments: tuple[int, int, float, str]) -> list[dict[str, np.ndarray]]:
    return pack_study(*arguments)


def build(path: Path, *, seed: int, n_studies: int, motion_rate: float = 0.5, workers: int | None = None,
          anatomy: AnatomyVersion | str = AnatomyVersion.V1) -> Path:
    """Generate studies 0 .. ``n_studies`` - 1 of ``seed`` (phantom ``anatomy``) in a process pool, pack them and
    save them to ``path`` (.npz)."""
    version = AnatomyVersion(anatomy).value
    jobs = [(seed, index, motion_rate, version) for index in range(n_studies)]
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers <= 1:
        packed = [item for job in jobs for item in _pack_study(job)]
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            packed = [item for items in pool.map(_pack_study, jobs) for item in items]
    arrays = {key: np.stack([item[key] for item in packed]) for key in packed[0]}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, allow_pickle=True, **arrays)  # numpy's default, named so mypy does not match **arrays to it
    LOGGER.info("%s: %d cases from %d studies of seed %d", path, len(packed), n_studies, seed)
    return path


def load(path: Path) -> dict[str, np.ndarray]:
    """A data set saved by :func:`build`, fully in memory."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
