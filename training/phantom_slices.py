"""Labelled mapping slices from the phantom, in memory: the training and held-out data of every model.

A :class:`SliceCase` is one slice acquired with one sequence, at the image's own resolution: the scanner-style
map (plain fit of the stored images), its R2 map, the raw images, the truth masks and AHA segments, the
per-segment motion labels and the contours of 3 experts and 4 trainees. The same physics and readers as
``myomap phantom`` (phantom/), without writing DICOM; the studies are drawn with the study generator's own plan
(field, vendor, heart rate, SNR, matrix), so the two agree.

Seeds: training uses seeds from :data:`TRAINING_SEED` upwards; tests use seeds below 100000, so no held-out case
was ever seen in training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from inference.grids import GRID_SPACING_MM, SEGMENTATION_SIZE
from inference.mapping import MappingScheme, reconstruct_map
from phantom.acquisition import acquire
from phantom.acquisition_v2 import acquire_v2, scanner_map
from phantom.anatomy import choose_matrix, make_heart_geometry
from phantom.dicom_images import encode_magnitude
from phantom.model import AcquiredSeries, FrameMotion, SequenceKind, SliceLevel
from phantom.motion import sample_breathing
from phantom.schemes import Scheme, make_scheme
from phantom.study import (
    LEVEL_ORDER,
    AnatomyVersion,
    SliceTruth,
    StudyRequest,
    _Purpose,
    _rng,
    draw_readers,
    draw_study_v2,
    make_slice,
    plan_study,
)
from phantom.tissue import level_segments, sample_tissue_properties

TRAINING_SEED = 100_000
#: Held-out (validation) studies of training runs; tests use their own seeds below 100000.
VALIDATION_SEED = 200_000
#: The same for phantom v2 (realistic anatomy and surroundings).
TRAINING_SEED_V2 = 120_000
VALIDATION_SEED_V2 = 220_000
MAPPING_SCHEME = {
    SequenceKind.MOLLI_533: MappingScheme.MOLLI,
    SequenceKind.MOLLI_5S3S3S: MappingScheme.MOLLI,
    SequenceKind.SHMOLLI: MappingScheme.SHMOLLI,
    SequenceKind.T2PREP: MappingScheme.T2PREP,
}
#: Label values of ``SliceCase.labels``.
BACKGROUND, CAVITY, MYOCARDIUM = 0, 1, 2


@dataclass(frozen=True)
class SliceCase:
    """One slice, one sequence, at the image's resolution."""

    seed: int
    study_index: int
    level: SliceLevel
    field_t: str
    vendor: str
    sequence: SequenceKind
    pixel_spacing_mm: tuple[float, float]
    map_ms: np.ndarray  # (rows, columns) float32, the plain fit; 0 where the fit is not valid
    r2: np.ndarray  # (rows, columns) float32, 0..1
    images: np.ndarray  # (n, rows, columns) float32, stored magnitude in acquisition order
    times_ms: np.ndarray  # (n,) inversion times (IR) or T2-prep durations
    labels: np.ndarray  # (rows, columns) uint8: BACKGROUND, CAVITY (blood and papillary muscles), MYOCARDIUM
    aha_segments: np.ndarray  # (rows, columns) uint8: AHA segment number inside the myocardium, else 0
    lv_centre_px: tuple[float, float]  # (x, y)
    motion_by_segment: dict[int, bool]  # AHA segment -> motion artefact (phantom rule)
    reader_names: tuple[str, ...]  # experts then trainees
    reader_roles: tuple[str, ...]
    reader_error_modes: tuple[str, ...]  # "" for experts
    reader_masks: np.ndarray  # (readers, rows, columns) bool, myocardium
    wall_thickness_mm: dict[int, float]
    anatomy: str = AnatomyVersion.V1.value  # the phantom version that drew the slice

    @property
    def is_t1(self) -> bool:
        return self.sequence is not SequenceKind.T2PREP

    @property
    def segments(self) -> tuple[int, ...]:
        """AHA segment numbers of this slice's level, in order."""
        return level_segments(self.level)

    @property
    def myocardium_mask(self) -> np.ndarray:
        return self.labels == MYOCARDIUM

    @property
    def cavity_mask(self) -> np.ndarray:
        return self.labels == CAVITY


def study_cases(seed: int, study_index: int, *, motion_rate: float = 0.5,
                anatomy: AnatomyVersion | str = AnatomyVersion.V1) -> list[SliceCase]:
    """Every slice and sequence of one phantom study (3 levels x MOLLI or 5s(3s)3s, ShMOLLI, T2-prep).

    ``anatomy`` "v2" draws the realistic phantom (Sunnybrook-shaped hearts, surroundings, scanner sampling) through
    the same :func:`phantom.study.make_slice` as the files; its map is the scanner's fit of every pixel on the
    segmentation grid's field of view (noise in air and lung, as real maps), 0 outside it.
    """
    plan = plan_study(StudyRequest(seed=seed, motion_rate=motion_rate, anatomy=anatomy), study_index)
    heart_rng = _rng(seed, study_index, _Purpose.HEART)
    heart = make_heart_geometry(heart_rng)
    properties = sample_tissue_properties(heart_rng, plan.field)
    matrix, spacing_mm = choose_matrix(heart_rng)
    study_v2 = draw_study_v2(plan, heart) if plan.anatomy is AnatomyVersion.V2 else None
    if study_v2 is not None:
        matrix, spacing_mm = study_v2.imaging.display_matrix, study_v2.imaging.pixel_spacing_mm
    cases = []
    for level in LEVEL_ORDER:
        level_key = LEVEL_ORDER.index(level)
        truth = make_slice(plan, level, heart, properties, matrix, spacing_mm, study_v2)
        anatomy_of_slice = truth.anatomy
        readers = draw_readers(anatomy_of_slice, _rng(seed, study_index, _Purpose.READERS, level_key),
                               with_experts=True, with_trainees=True,
                               trainee_skill=plan.trainee_skill)[1:]  # truth is the label
        labels = np.where(anatomy_of_slice.myocardium_mask, MYOCARDIUM,
                          np.where(anatomy_of_slice.cavity_mask, CAVITY, BACKGROUND))
        for sequence_index, kind in enumerate(plan.sequences):
            acquisition_rng = _rng(seed, study_index, _Purpose.ACQUISITION, level_key, sequence_index)
            scheme = make_scheme(kind, plan.rr_ms, acquisition_rng)
            motion = sample_breathing(acquisition_rng, scheme.n_images, motion_probability=plan.motion_rate)
            acquired, map_ms, r2 = _acquire_and_fit(truth, scheme, kind, plan.snr, plan.rr_ms, motion,
                                                    acquisition_rng)
            stored = encode_magnitude(acquired.magnitude)
            times = acquired.inversion_times_ms if acquired.inversion_times_ms is not None else acquired.t2_prep_ms
            cases.append(SliceCase(
                seed=seed,
                study_index=study_index,
                level=level,
                field_t=plan.field.value,
                vendor=plan.vendor.value,
                sequence=kind,
                pixel_spacing_mm=anatomy_of_slice.geometry.pixel_spacing_mm,
                map_ms=map_ms,
                r2=r2,
                images=stored.astype(np.float32),
                times_ms=np.asarray(times, dtype=np.float32),
                labels=labels.astype(np.uint8),
                aha_segments=anatomy_of_slice.aha_segment_map,
                lv_centre_px=anatomy_of_slice.lv_centre_px,
                motion_by_segment=dict(acquired.motion_labels),
                reader_names=tuple(r.reader for r in readers),
                reader_roles=tuple(r.role for r in readers),
                reader_error_modes=tuple(r.error_mode or "" for r in readers),
                reader_masks=np.stack([r.myocardium_mask for r in readers]),
                wall_thickness_mm=dict(anatomy_of_slice.wall_thickness_mm),
                anatomy=plan.anatomy.value,
            ))
    return cases


def _acquire_and_fit(truth: SliceTruth, scheme: Scheme, kind: SequenceKind, snr: float, rr_ms: float,
                     motion: Sequence[FrameMotion] | None,
                     rng: np.random.Generator) -> tuple[AcquiredSeries, np.ndarray, np.ndarray]:
    """Acquire one sequence of one slice and fit its map as the scanner does: v1 the plain fit with 0 where it is
    not valid; v2 every pixel of the segmentation grid's field of view (``scanner_map``)."""
    inversion_index = np.asarray(scheme.image_set_index) if kind is SequenceKind.SHMOLLI else None
    if truth.realistic is None:
        acquired = acquire(truth.anatomy, scheme, rng, snr=snr, motion=motion, b1_scale=truth.b1_scale,
                           coil=truth.coil)
    else:
        acquired = acquire_v2(truth.realistic, scheme, rng, snr=snr, motion=motion, b1_scale=truth.b1_scale)
    stored = encode_magnitude(acquired.magnitude).astype(np.float64)
    times = acquired.inversion_times_ms if acquired.inversion_times_ms is not None else acquired.t2_prep_ms
    times = np.asarray(times, dtype=np.float64)
    if truth.realistic is None:
        result = reconstruct_map(stored, times, MAPPING_SCHEME[kind], rr_ms=rr_ms, inversion_index=inversion_index,
                                 correction="none")
        map_ms = np.where(result.valid, np.nan_to_num(result.map_ms), 0.0)
        r2 = np.nan_to_num(result.r2)
    else:
        fitted = scanner_map(stored, times, kind, rr_ms=rr_ms, inversion_index=inversion_index,
                             region=grid_field_of_view(stored.shape[1:], truth.anatomy.geometry.pixel_spacing_mm))
        map_ms, r2 = np.nan_to_num(fitted.map_ms), np.nan_to_num(fitted.r2)
    return acquired, map_ms.astype(np.float32), r2.astype(np.float32)


def grid_field_of_view(shape: tuple[int, ...], pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
    """The pixels of an image that the segmentation grid (inference/grids.py, centred on the image) can sample,
    with a margin of 2 grid pixels."""
    half_extent_mm = (SEGMENTATION_SIZE / 2 + 2) * GRID_SPACING_MM
    rows, columns = np.ogrid[:shape[0], :shape[1]]
    row_mm = np.abs(rows - (shape[0] - 1) / 2) * pixel_spacing_mm[0]
    column_mm = np.abs(columns - (shape[1] - 1) / 2) * pixel_spacing_mm[1]
    return (row_mm <= half_extent_mm) & (column_mm <= half_extent_mm)


def _study_cases(arguments: tuple[int, int, float, str]) -> list[SliceCase]:
    seed, study_index, motion_rate, anatomy = arguments
    return study_cases(seed, study_index, motion_rate=motion_rate, anatomy=anatomy)


def iter_cases(seed: int, n_studies: int, *, motion_rate: float = 0.5, workers: int | None = None,
               first_study: int = 0, anatomy: AnatomyVersion | str = AnatomyVersion.V1) -> Iterator[SliceCase]:
    """The cases of studies ``first_study .. first_study + n_studies - 1`` of ``seed``, in study order, made in a
    process pool of ``workers`` (the CPU count when None), with phantom ``anatomy`` v1 or v2."""
    version = AnatomyVersion(anatomy).value
    jobs = [(seed, index, motion_rate, version) for index in range(first_study, first_study + n_studies)]
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers <= 1:
        for job in jobs:
            yield from _study_cases(job)
        return
    with ProcessPoolExecutor(max_workers=n_workers) as pool:
        for cases in pool.map(_study_cases, jobs):
            yield from cases
