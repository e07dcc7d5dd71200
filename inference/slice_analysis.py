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

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np

from inference import expert_consensus, motion, quality, segmentation
from inference.aha import AhaLevel, WallThickness, aha_segments, rv_insertion_points, wall_thickness_mm
from inference.contour_fit import FittedContours, fit_contours
from inference.grids import mask_centre_px
from inference.heart_check import NoLeftVentricleError, require_left_ventricle
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
from inference.quality import QualityEstimate
from inference.segmentation import Segmentation

LOGGER = logging.getLogger(__name__)

__all__ = ["ALGORITHM_NAME", "QC_DOUBTFUL_DICE", "VALUE_REGION", "NoLeftVentricleError", "RawImages",
           "SliceAnalysis", "analyse_slice", "reader_consensus"]

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
    """The raw inversion-recovery images of the slice, for motion detection."""

    images: np.ndarray  # (n, rows, columns) magnitude, any order
    times_ms: np.ndarray  # (n,) inversion times
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
    motion: MotionResult | None  # None for T2 maps and maps without raw images
    quality: QualityEstimate
    consensus_mask: np.ndarray | None = None  # expert consensus from a reader's contour, when one was given

    @property
    def segmentation_doubtful(self) -> bool:
        return self.quality.predicted_dice < QC_DOUBTFUL_DICE

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


def analyse_slice(
    map_ms: np.ndarray,
    map_kind: MapKind,
    pixel_spacing_mm: tuple[float, float],
    level: AhaLevel | str,
    models: ModelSet,
    *,
    raw: RawImages | None = None,
    rv_mask: np.ndarray | None = None,
) -> SliceAnalysis:
    """Segment the map, check it is a short-axis LV, fit the contours, measure and check one slice.

    ``map_ms`` may mark pixels without a value with NaN or with 0 (or below); they are 0 for the models and left
    out of every statistic.

    Raises
    ------
    NoLeftVentricleError
        When the segmentation is not a short-axis LV (vials, long-axis slices, other organs); the message starts
        "no left ventricle found" and says why in plain words.
    AnalysisError
        When the contours cannot be fitted or do not describe a wall; the message says why in plain words.
    """
    level = AhaLevel(level)
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    given = np.asarray(map_ms, dtype=np.float32)
    valued = has_value(given)
    values = np.where(valued, given, np.float32(0.0)).astype(np.float32)  # the models' input: no NaN
    found = segmentation.segment_map(values, spacing, models.segmentation)
    require_left_ventricle(found.myocardium_mask, found.cavity_mask, spacing)
    contours = fit_contours(found.cavity_mask, found.myocardium_mask, spacing)
    centre = mask_centre_px(found.cavity_mask | found.myocardium_mask)
    anterior, inferior = rv_insertion_points(found.myocardium_mask, rv_mask, centre, pixel_spacing_mm=spacing)
    segments = aha_segments(found.myocardium_mask, centre, anterior, level, inferior_insertion_px=inferior,
                            pixel_spacing_mm=spacing)
    mid_wall = mid_wall_mask(found.myocardium_mask, found.cavity_mask, spacing)
    measured = np.where(valued, given, np.float32(np.nan))  # statistics over pixels with a value only
    myocardium = region_values(measured, mid_wall, pixel_spacing_mm=spacing, min_pixels=MIN_SEGMENT_PIXELS,
                               min_valid_fraction=MIN_VALID_FRACTION)
    per_segment = segment_values(measured, segments, pixel_spacing_mm=spacing, within=mid_wall)
    thickness = wall_thickness_mm(contours, spacing, centre, anterior, level, inferior_insertion_px=inferior)
    motion_result = None
    if raw is not None and map_kind is MapKind.T1:
        motion_result = motion.detect_motion(raw.images, raw.times_ms, values, raw.r2, segments, centre, spacing,
                                             models.motion)
    estimate = quality.predict_dice(values, found.myocardium_mask, spacing, models.qc_encoder, models.qc_decoder,
                                    lv_centre_px=centre)
    _require_recognised(measured, found, estimate)
    analysis = SliceAnalysis(
        map_kind=map_kind,
        level=level,
        pixel_spacing_mm=spacing,
        map_ms=values,
        segmentation=found,
        contours=contours,
        lv_centre_px=centre,
        anterior_insertion_px=anterior,
        inferior_insertion_px=inferior,
        aha_segment_map=segments,
        myocardium_values=myocardium,
        segment_values=per_segment,
        wall_thickness=thickness,
        motion=motion_result,
        quality=estimate,
    )
    if analysis.missing_fraction > 0:
        LOGGER.info("%.0f %% of the myocardium has no map value", 100.0 * analysis.missing_fraction)
    return analysis


def _require_recognised(measured_ms: np.ndarray, found: Segmentation, estimate: QualityEstimate) -> None:
    """Refuse a segmentation the quality model does not recognise as a left ventricle."""
    if estimate.predicted_dice >= QC_NOT_A_HEART_DICE:
        return
    ring = measured_ms[found.myocardium_mask & np.isfinite(measured_ms)]
    cavity = measured_ms[found.cavity_mask & np.isfinite(measured_ms)]
    values = f" (ring {np.median(ring):.0f} ms, inside it {np.median(cavity):.0f} ms)" if ring.size and cavity.size \
        else ""
    raise NoLeftVentricleError(
        f"no left ventricle found: the quality model does not recognise the segmented ring as one (predicted Dice "
        f"{estimate.predicted_dice:.2f}){values}"
    )


def reader_consensus(map_ms: np.ndarray, reader_myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float],
                     models: ModelSet) -> np.ndarray:
    """The expert-consensus myocardium the consensus model draws from one reader's contour and the map."""
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32))
    return expert_consensus.expert_consensus_mask(values, reader_myocardium_mask, pixel_spacing_mm, models.consensus)
