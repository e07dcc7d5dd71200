"""The analysis of one mapping slice by the node's models: segmentation, contour fitting, AHA segment values and
wall thickness, motion artefact detection and segmentation quality control.

:func:`analyse_slice` is what the node's pipeline, ``myomap analyze`` and the analysis benchmark call; its
:class:`SliceAnalysis` is what the reports (SR, SEG, Secondary Captures, web page) are made from.

Pixels without a value (NaN, or 0 and below as scanners write failed pixels) are missing: the models see them as
0, but no statistic counts them (inference/myocardium_values.py). Before anything is measured the segmentation
must pass as a short-axis LV (inference/heart_check.py). Myocardial T1/T2 are read in the mid-wall region
(:data:`VALUE_REGION`, after the SCMR/EACVI consensus, Messroghli et al. 2017), per AHA segment and over the slice;
the full ring gives the wall thickness, the myocardial area and :attr:`SliceAnalysis.ring_values`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import ClassVar, TypeVar

import numpy as np

from inference import expert_consensus, motion, quality, segmentation
from inference.aha import AhaLevel, WallThickness, aha_segments, rv_insertion_points, wall_thickness_mm
from inference.contour_fit import FittedContours, fit_contours
from inference.grids import mask_centre_px
from inference.heart_check import HeartCheck, NoLeftVentricleError, require_left_ventricle
from inference.mapping import MapKind
from inference.model_set import ModelSet
from inference.motion import MotionResult
from inference.myocardium_values import (
    MID_WALL_FRACTION,
    MIN_SEGMENT_PIXELS,
    MIN_VALID_FRACTION,
    RegionValues,
    has_value,
    mid_wall_mask,
    region_values,
    segment_values,
)
from inference.plausibility import contour_doubts
from inference.quality import QualityEstimate
from inference.segmentation import Segmentation
from inference.t2_motion import detect_t2_motion

LOGGER = logging.getLogger(__name__)

__all__ = ["ALGORITHM_NAME", "QC_DOUBTFUL_DICE", "VALUE_REGION", "NoLeftVentricleError", "RawImages",
           "SliceAnalysis", "SliceRequest", "analyse_slice", "analyse_slices", "reader_consensus",
           "with_motion"]

ALGORITHM_NAME = "myomap"
#: Where the reported myocardial values come from, in words for the reports.
VALUE_REGION = f"mid-wall (central {100.0 * MID_WALL_FRACTION:.0f} % of the wall)"
#: Below this predicted Dice the segmentation is reported as doubtful.
QC_DOUBTFUL_DICE = 0.80
#: Below this predicted Dice the quality model does not recognise the segmented ring as a left ventricle at all
#: (a vial cut into rim and core passes the shape checks of inference/heart_check.py): no values are reported.
#: Hearts, even badly segmented, score far higher (phantom 0.85-0.97; doubtful contours 0.5-0.8).
QC_NOT_A_HEART_DICE = 0.3


@dataclass(frozen=True)
class RawImages:
    """The raw images of the slice (inversion recovery or T2-prep) and the fit's quality, for motion detection."""

    images: np.ndarray  # (n, rows, columns) magnitude, any order
    times_ms: np.ndarray  # (n,) inversion times or T2-prep durations
    r2: np.ndarray  # (rows, columns) fit quality of the map, 0..1


@dataclass(frozen=True)
class SliceAnalysis:
    """Everything the models and measurements found on one map slice.

    ``map_ms`` holds 0 where the map has no value. ``myocardium_values`` and ``segment_values`` are read in the
    mid-wall region (:attr:`value_region`); ``ring_values`` and ``missing_fraction`` describe the full ring.
    """

    value_region: ClassVar[str] = VALUE_REGION

    map_kind: MapKind
    level: AhaLevel
    pixel_spacing_mm: tuple[float, float]
    map_ms: np.ndarray
    segmentation: Segmentation
    contours: FittedContours
    lv_centre_px: tuple[float, float]
    anterior_insertion_px: tuple[float, float]
    inferior_insertion_px: tuple[float, float]
    aha_segment_map: np.ndarray  # AHA number inside the myocardium, 0 elsewhere
    myocardium_values: RegionValues
    segment_values: dict[int, RegionValues]
    wall_thickness: WallThickness
    motion: MotionResult | None  # None for maps without raw images (T2: inference/t2_motion.py)
    quality: QualityEstimate
    consensus_mask: np.ndarray | None = None  # expert consensus from a reader's contour, when one was given

    @property
    def segmentation_doubtful(self) -> bool:
        """The predicted Dice is low or the contours have an implausible anatomy or values
        (``quality.doubts``)."""
        return self.quality.predicted_dice < QC_DOUBTFUL_DICE or bool(self.quality.doubts)

    @cached_property
    def ring_values(self) -> RegionValues:
        """Values of the full myocardial ring, no border left out (its area is the myocardial area)."""
        return region_values(self.map_ms, self.segmentation.myocardium_mask, pixel_spacing_mm=self.pixel_spacing_mm)

    @cached_property
    def value_mask(self) -> np.ndarray:
        """The pixels the reported myocardial values are from (:data:`VALUE_REGION`)."""
        return mid_wall_mask(self.segmentation.myocardium_mask, self.segmentation.cavity_mask, self.pixel_spacing_mm)

    @property
    def missing_fraction(self) -> float:
        """Fraction of the ring's pixels without a value (failed fits), 0..1."""
        fraction = self.ring_values.missing_fraction
        return fraction if np.isfinite(fraction) else 0.0


@dataclass(frozen=True)
class SliceRequest:
    """One slice to analyse: the arguments of :func:`analyse_slice`."""

    map_ms: np.ndarray
    map_kind: MapKind
    pixel_spacing_mm: tuple[float, float]
    level: AhaLevel | str
    raw: RawImages | None = None
    rv_mask: np.ndarray | None = None
    field_strength_t: float | None = None


def analyse_slice(
    map_ms: np.ndarray,
    map_kind: MapKind,
    pixel_spacing_mm: tuple[float, float],
    level: AhaLevel | str,
    models: ModelSet,
    *,
    raw: RawImages | None = None,
    rv_mask: np.ndarray | None = None,
    field_strength_t: float | None = None,
) -> SliceAnalysis:
    """Segment the map, check it is a short-axis LV, fit the contours, measure and check one slice.

    ``map_ms`` may mark pixels without a value with NaN or with 0 (or below); they are 0 for the models and left
    out of every statistic. ``field_strength_t`` sets the plausible myocardial T1 (inference/plausibility.py;
    the wider 3 T range when None).

    Raises
    ------
    NoLeftVentricleError
        When the segmentation is not a short-axis LV (vials, long-axis slices, other organs); the message starts
        "no left ventricle found" and says why in plain words.
    AnalysisError
        When the contours cannot be fitted or do not describe a wall; the message says why in plain words.
    """
    request = SliceRequest(map_ms, map_kind, pixel_spacing_mm, level, raw, rv_mask, field_strength_t)
    result = analyse_slices([request], models)[0]
    if isinstance(result, Exception):
        raise result
    return result


@dataclass(frozen=True)
class _Prepared:
    level: AhaLevel
    spacing: tuple[float, float]
    valued: np.ndarray  # pixels with a value
    values: np.ndarray  # the models' input: 0 where there is no value
    measured: np.ndarray  # NaN where there is no value: statistics over pixels with a value only


@dataclass(frozen=True)
class _Measured:
    found: Segmentation
    shape: HeartCheck
    contours: FittedContours
    centre: tuple[float, float]
    anterior: tuple[float, float]
    inferior: tuple[float, float]
    segments: np.ndarray
    myocardium: RegionValues
    per_segment: dict[int, RegionValues]
    thickness: WallThickness


_T = TypeVar("_T")


def _guarded(failures: dict[int, Exception], index: int, step: Callable[[], _T]) -> _T | None:
    """``step()``, or None with its fault noted under the slice's ``index``: a fault stays with its slice, and the
    caller sorts analysis errors from faults."""
    try:
        return step()
    except Exception as error:
        failures[index] = error
        return None


def analyse_slices(requests: Sequence[SliceRequest], models: ModelSet) -> list[SliceAnalysis | Exception]:
    """:func:`analyse_slice` of every request, each model run once per batch of slices rather than once per slice.

    The result of each slice is the one it gets alone (up to the models' rounding in larger batches), or the
    exception :func:`analyse_slice` would raise for it: one slice's failure never stops the others. An exception
    in a batched model run is raised.
    """
    failures: dict[int, Exception] = {}
    guarded = functools.partial(_guarded, failures)
    prepared = {i: p for i, request in enumerate(requests)
                if (p := guarded(i, functools.partial(_prepare, request))) is not None}
    found = segmentation.segment_maps([p.values for p in prepared.values()], [p.spacing for p in prepared.values()],
                                      models.segmentation)
    measured = {i: m for i, own in zip(prepared, found, strict=True)
                if (m := guarded(i, functools.partial(_measure, requests[i], prepared[i], own))) is not None}
    # The left-right mirrored maps of the slices that passed as a heart, for the QC's agreement.
    mirrored = segmentation.mirrored_segmentations([prepared[i].values for i in measured],
                                                   [prepared[i].spacing for i in measured], models.segmentation)
    agreements = {i: quality.mirror_agreement(m.found.myocardium_mask, mirror)
                  for (i, m), mirror in zip(measured.items(), mirrored, strict=True)}
    motions = _detect_motion(requests, {i: _MotionSite(prepared[i].values, m.segments, m.centre, prepared[i].spacing)
                                        for i, m in measured.items()}, models, guarded)
    judged = [i for i in measured if i not in failures]
    estimates = quality.predict_dices(
        [quality.QualityInput(prepared[i].values, measured[i].found.myocardium_mask, prepared[i].spacing,
                              measured[i].centre, agreements[i])
         for i in judged], models.qc_encoder, models.qc_decoder)
    analyses = {i: a for i, estimate in zip(judged, estimates, strict=True)
                if (a := guarded(i, functools.partial(_finish, requests[i], prepared[i], measured[i],
                                                      motions.get(i), estimate))) is not None}
    return [analyses[i] if i in analyses else failures[i] for i in range(len(requests))]


def _prepare(request: SliceRequest) -> _Prepared:
    level = AhaLevel(request.level)
    segmentation.check_input(request.map_ms, request.pixel_spacing_mm)
    given = np.asarray(request.map_ms, dtype=np.float32)
    valued = has_value(given)
    return _Prepared(level=level, spacing=(float(request.pixel_spacing_mm[0]), float(request.pixel_spacing_mm[1])),
                     valued=valued, values=np.where(valued, given, np.float32(0.0)).astype(np.float32),
                     measured=np.where(valued, given, np.float32(np.nan)))


def _measure(request: SliceRequest, prepared: _Prepared, found: Segmentation) -> _Measured:
    """Heart check, contours, AHA segments, values and wall thickness of a segmented slice."""
    spacing, level = prepared.spacing, prepared.level
    shape = require_left_ventricle(found.myocardium_mask, found.cavity_mask, spacing)
    contours = fit_contours(found.cavity_mask, found.myocardium_mask, spacing)
    centre = mask_centre_px(found.cavity_mask | found.myocardium_mask)
    anterior, inferior = rv_insertion_points(found.myocardium_mask, request.rv_mask, centre, pixel_spacing_mm=spacing)
    segments = aha_segments(found.myocardium_mask, centre, anterior, level, inferior_insertion_px=inferior,
                            pixel_spacing_mm=spacing)
    mid_wall = mid_wall_mask(found.myocardium_mask, found.cavity_mask, spacing)
    return _Measured(
        found=found, shape=shape, contours=contours, centre=centre, anterior=anterior,
        inferior=inferior, segments=segments,
        myocardium=region_values(prepared.measured, mid_wall, pixel_spacing_mm=spacing, min_pixels=MIN_SEGMENT_PIXELS,
                                 min_valid_fraction=MIN_VALID_FRACTION),
        per_segment=segment_values(prepared.measured, segments, pixel_spacing_mm=spacing, within=mid_wall),
        thickness=wall_thickness_mm(contours, spacing, centre, anterior, level, inferior_insertion_px=inferior),
    )


@dataclass(frozen=True)
class _MotionSite:
    """What motion detection needs of a measured slice besides its raw images."""

    values: np.ndarray  # the map, 0 where there is no value
    segments: np.ndarray  # AHA segment map
    centre: tuple[float, float]
    spacing: tuple[float, float]


def _detect_motion(requests: Sequence[SliceRequest], sites: dict[int, _MotionSite], models: ModelSet,
                   guarded: Callable[[int, Callable[[], object]], object]) -> dict[int, MotionResult]:
    """Motion of every measured slice with raw images: the T1 slices through the motion model together (a slice
    with bad inputs fails alone), the T2 slices from their fit quality."""
    motions: dict[int, MotionResult] = {}
    batch: dict[int, motion.MotionInput] = {}
    model_inputs: list[dict[str, np.ndarray]] = []
    for i, site in sites.items():
        raw = requests[i].raw
        if raw is None:
            continue
        if requests[i].map_kind is not MapKind.T1:  # T2: the fit quality of the T2-prep images
            result = guarded(i, functools.partial(detect_t2_motion, raw.r2, site.segments))
            if isinstance(result, MotionResult):
                motions[i] = result
            continue
        one = motion.MotionInput(raw.images, raw.times_ms, site.values, raw.r2, site.segments, site.centre,
                                 site.spacing)
        checked = guarded(i, functools.partial(motion.motion_inputs, one.images, one.times_ms, one.t1_map_ms, one.r2,
                                               one.aha_segment_map, one.lv_centre_px, one.pixel_spacing_mm))
        if isinstance(checked, dict):
            batch[i] = one
            model_inputs.append(checked)
    if batch:
        motions.update(zip(batch, motion.detect_motions(list(batch.values()), models.motion, model_inputs),
                           strict=True))
    return motions


def with_motion(requests: Sequence[SliceRequest], results: Sequence[SliceAnalysis | Exception],
                models: ModelSet) -> list[SliceAnalysis | Exception]:
    """The ``results`` of :func:`analyse_slices` for the ``requests`` stripped of their raw images, completed with
    the motion found from the raw images ``requests`` hold: what :func:`analyse_slices` gives for ``requests``
    (a slice whose raw images fail the motion model's checks fails, as it does there).

    A process that is sent only the maps (a forked helper: the raw images are ten times the map) analyses them;
    the process that holds the raw images adds the motion.
    """
    failures: dict[int, Exception] = {}
    guarded = functools.partial(_guarded, failures)
    sites = {i: _MotionSite(r.map_ms, r.aha_segment_map, r.lv_centre_px, r.pixel_spacing_mm)
             for i, r in enumerate(results) if isinstance(r, SliceAnalysis)}
    motions = _detect_motion(requests, sites, models, guarded)
    completed: list[SliceAnalysis | Exception] = []
    for i, result in enumerate(results):
        if i in failures:
            completed.append(failures[i])
        elif i in motions and isinstance(result, SliceAnalysis):
            completed.append(replace(result, motion=motions[i]))
        else:
            completed.append(result)
    return completed


def _finish(request: SliceRequest, prepared: _Prepared, measured: _Measured, motion_result: MotionResult | None,
            estimate: QualityEstimate) -> SliceAnalysis:
    _require_recognised(prepared.measured, measured.found, estimate)
    estimate = replace(estimate, doubts=contour_doubts(measured.shape, measured.myocardium.median, request.map_kind,
                                                       request.field_strength_t))
    if estimate.doubts:
        LOGGER.info("contours doubtful: %s", "; ".join(estimate.doubts))
    analysis = SliceAnalysis(
        map_kind=request.map_kind,
        level=prepared.level,
        pixel_spacing_mm=prepared.spacing,
        map_ms=prepared.values,
        segmentation=measured.found,
        contours=measured.contours,
        lv_centre_px=measured.centre,
        anterior_insertion_px=measured.anterior,
        inferior_insertion_px=measured.inferior,
        aha_segment_map=measured.segments,
        myocardium_values=measured.myocardium,
        segment_values=measured.per_segment,
        wall_thickness=measured.thickness,
        motion=motion_result,
        quality=estimate,
    )
    if analysis.missing_fraction > 0:
        LOGGER.info("%.0f %% of the myocardium has no map value", 100.0 * analysis.missing_fraction)
    return analysis


def _require_recognised(measured_ms: np.ndarray, found: Segmentation, estimate: QualityEstimate) -> None:
    """Refuse a segmentation the quality model's autoencoder does not recognise as a left ventricle (a low
    agreement under mirroring alone makes contours doubtful, not the heart absent)."""
    if estimate.autoencoder_dice >= QC_NOT_A_HEART_DICE:
        return
    ring = measured_ms[found.myocardium_mask & np.isfinite(measured_ms)]
    cavity = measured_ms[found.cavity_mask & np.isfinite(measured_ms)]
    values = f" (ring {np.median(ring):.0f} ms, inside it {np.median(cavity):.0f} ms)" if ring.size and cavity.size \
        else ""
    raise NoLeftVentricleError(
        f"no left ventricle found: the quality model does not recognise the segmented ring as one (predicted Dice "
        f"{estimate.autoencoder_dice:.2f}){values}"
    )


def reader_consensus(map_ms: np.ndarray, reader_myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float],
                     models: ModelSet) -> np.ndarray:
    """The expert-consensus myocardium the consensus model draws from one reader's contour and the map."""
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32))
    return expert_consensus.expert_consensus_mask(values, reader_myocardium_mask, pixel_spacing_mm, models.consensus)
