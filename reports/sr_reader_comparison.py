"""A reader's myocardium contour compared with a reference (gold standard or consensus), as a TID 1500 report.

One slice, three planar ROI groups (TID 1410) on the map the reader drew on: the reader's endocardial and
epicardial contours (closed POLYLINEs, with the areas they enclose) and the reader's myocardium (the ring between
them, see :func:`reports.sr_measurement.ring_polygon_px`) holding the comparison: Dice, Hausdorff and mean surface
distance, the difference of the mean map value and of the mean wall thickness (reader minus reference), and the
contouring error mode. The reader and the reference are named in the groups' tracking identifiers.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from reports import codes
from reports.sr_measurement import (
    algorithm_identification,
    closed_polyline,
    derived_uid,
    measurement_document,
    polygon_area_mm2,
    ring_polygon_px,
    structure_group,
)

LOGGER = logging.getLogger(__name__)

SERIES_DESCRIPTION = "myomap reader comparison"


def _pixel_spacing_mm(source: Dataset) -> tuple[float, float]:
    """(row, column) spacing of a single-frame image or of a multi-frame image's shared functional groups."""
    if "PixelSpacing" in source:
        spacing = source.PixelSpacing
    else:
        spacing = source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    return float(spacing[0]), float(spacing[1])


def _contour(points_px: object, name: str) -> np.ndarray:
    points = np.asarray(points_px, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3 or not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be at least 3 finite (x, y) points, got shape {points.shape}")
    return points


def build_reader_comparison_report(
    source: Dataset,
    *,
    reader: str,
    reference: str,
    dice_myocardium: float,
    hausdorff_mm: float,
    mean_surface_distance_mm: float,
    map_difference_ms: float,
    wall_thickness_difference_mm: float,
    error_mode: str,
    reader_endo_px: np.ndarray,
    reader_epi_px: np.ndarray,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    algorithm_version: str,
) -> hd.sr.Comprehensive3DSR:
    """Build the report of one reader's contour against a reference on the map ``source``.

    Parameters
    ----------
    source
        The map image the reader drew on.
    reader, reference
        Names of the reader and of the reference (e.g. ``"consensus"`` or an expert's name).
    dice_myocardium, hausdorff_mm, mean_surface_distance_mm
        Agreement of the reader's myocardium with the reference's.
    map_difference_ms, wall_thickness_difference_mm
        Reader minus reference: mean map value (T1 or T2) and mean wall thickness.
    error_mode
        An :class:`inference.trainee_scoring.ErrorMode` or its value (``"good"``, ``"shifted"``, ...).
    reader_endo_px, reader_epi_px
        The reader's closed contours, (N, 2) (x, y) pixels with the top-left pixel's centre at (0, 0).
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identification of the new SR series and instance.
    algorithm_version
        Version of the analysis that scored the contour.

    Raises
    ------
    ValueError
        If the error mode is unknown or a contour is not a list of points. A score that is not a finite number
        is left out of the report.
    """
    mode = str(getattr(error_mode, "value", error_mode))  # an ErrorMode member or its value
    if mode not in codes.ERROR_MODES:
        raise ValueError(f"error_mode must be one of {sorted(codes.ERROR_MODES)}, got {error_mode!r}")
    endo = _contour(reader_endo_px, "reader_endo_px")
    epi = _contour(reader_epi_px, "reader_epi_px")
    spacing = _pixel_spacing_mm(source)
    algorithm = algorithm_identification(algorithm_version)
    label = f"{reader} vs {reference}"

    def tracking(name: str) -> hd.sr.TrackingIdentifier:
        return hd.sr.TrackingIdentifier(uid=derived_uid(sop_instance_uid, name), identifier=f"{label} {name}")

    def measurement(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept) -> hd.sr.Measurement:
        return hd.sr.Measurement(name=name, value=float(value), unit=unit)

    scores = [
        (codes.DICE, dice_myocardium, codes.UNIT_ONE),
        (codes.HAUSDORFF_DISTANCE, hausdorff_mm, codes.UNIT_MM),
        (codes.MEAN_SURFACE_DISTANCE, mean_surface_distance_mm, codes.UNIT_MM),
        (codes.MAP_DIFFERENCE, map_difference_ms, codes.UNIT_MS),
        (codes.WALL_THICKNESS_DIFFERENCE, wall_thickness_difference_mm, codes.UNIT_MM),
    ]

    # A score that is not a finite number (e.g. no valid map pixel under the contour) is left out.
    comparison = [measurement(name, value, unit) for name, value, unit in scores
                  if value is not None and np.isfinite(value)]
    groups = [
        structure_group(tracking("endocardial contour"), closed_polyline(endo, source), codes.LV_BLOOD_POOL, algorithm,
                        [measurement(codes.ENDOCARDIAL_AREA, polygon_area_mm2(endo, spacing), codes.UNIT_MM2)]),
        structure_group(tracking("epicardial contour"), closed_polyline(epi, source), codes.LV_WHOLE, algorithm,
                        [measurement(codes.EPICARDIAL_AREA, polygon_area_mm2(epi, spacing), codes.UNIT_MM2)]),
        structure_group(tracking("myocardium"), closed_polyline(ring_polygon_px(endo, epi), source),
                        codes.LV_MYOCARDIUM, algorithm, comparison,
                        [hd.sr.QualitativeEvaluation(name=codes.CONTOUR_ERROR_MODE, value=codes.ERROR_MODES[mode])]),
    ]
    document = measurement_document(
        groups, [source], series_description=SERIES_DESCRIPTION, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid, instance_number=instance_number,
    )
    LOGGER.debug("reader comparison %s: error mode %s", sop_instance_uid, mode)
    return document


__all__ = ["SERIES_DESCRIPTION", "build_reader_comparison_report"]
