"""The analysis of one mapping slice by the node's models: segmentation, contour fitting, AHA segment values and
wall thickness, motion artefact detection and segmentation quality control.

:func:`analyse_slice` is what the node's pipeline, ``myomap analyze`` and the analysis benchmark call; its
:class:`SliceAnalysis` is what the reports (SR, SEG, Secondary Captures, web page) are made from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from inference import expert_consensus, motion, quality, segmentation
from inference.aha import AhaLevel, WallThickness, aha_segments, rv_insertion_points, wall_thickness_mm
from inference.contour_fit import FittedContours, fit_contours
from inference.errors import AnalysisError
from inference.grids import mask_centre_px
from inference.mapping import MapKind
from inference.model_set import ModelSet
from inference.motion import MotionResult
from inference.myocardium_values import RegionValues, region_values, segment_values
from inference.quality import QualityEstimate
from inference.segmentation import Segmentation

LOGGER = logging.getLogger(__name__)

ALGORITHM_NAME = "myomap"
#: Erosion of the myocardium before its values are read, so partial volume with blood and fat stays out.
ERODE_MM = 1.0
#: Below this predicted Dice the segmentation is reported as doubtful.
QC_DOUBTFUL_DICE = 0.80


@dataclass(frozen=True)
class RawImages:
    """The raw inversion-recovery images of the slice, for motion detection."""

    images: np.ndarray  # (n, rows, columns) magnitude, any order
    times_ms: np.ndarray  # (n,) inversion times
    r2: np.ndarray  # (rows, columns) fit quality of the map, 0..1


@dataclass(frozen=True)
class SliceAnalysis:
    """Everything the models and measurements found on one map slice."""

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
    """Segment the map, fit the contours, measure and check one slice.

    Raises
    ------
    AnalysisError
        When no myocardium is found or its contours cannot be fitted; the message says why in plain words.
    """
    level = AhaLevel(level)
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32))
    found = segmentation.segment_map(values, spacing, models.segmentation)
    if not found.myocardium_mask.any():
        raise AnalysisError("no left-ventricular myocardium was found in the map")
    contours = fit_contours(found.cavity_mask, found.myocardium_mask, spacing)
    centre = mask_centre_px(found.cavity_mask | found.myocardium_mask)
    anterior, inferior = rv_insertion_points(found.myocardium_mask, rv_mask, centre, pixel_spacing_mm=spacing)
    segments = aha_segments(found.myocardium_mask, centre, anterior, level, inferior_insertion_px=inferior,
                            pixel_spacing_mm=spacing)
    myocardium = region_values(values, found.myocardium_mask, pixel_spacing_mm=spacing, erode_mm=ERODE_MM)
    per_segment = segment_values(values, segments, pixel_spacing_mm=spacing, erode_mm=ERODE_MM)
    thickness = wall_thickness_mm(contours, spacing, centre, anterior, level, inferior_insertion_px=inferior)
    motion_result = None
    if raw is not None and map_kind is MapKind.T1:
        motion_result = motion.detect_motion(raw.images, raw.times_ms, values, raw.r2, segments, centre, spacing,
                                             models.motion)
    estimate = quality.predict_dice(values, found.myocardium_mask, spacing, models.qc_encoder, models.qc_decoder,
                                    lv_centre_px=centre)
    return SliceAnalysis(
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


def reader_consensus(map_ms: np.ndarray, reader_myocardium_mask: np.ndarray, pixel_spacing_mm: tuple[float, float],
                     models: ModelSet) -> np.ndarray:
    """The expert-consensus myocardium the consensus model draws from one reader's contour and the map."""
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32))
    return expert_consensus.expert_consensus_mask(values, reader_myocardium_mask, pixel_spacing_mm, models.consensus)
