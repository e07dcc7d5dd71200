"""The study's AHA 16-segment values as one TID 1500 Measurement Report (Comprehensive 3D SR), built with highdicom.

The per-unit reports (:mod:`reports.sr_measurement`) hold each slice's contours and values; this report gathers
one slice per level (basal segments 1-6, mid 7-12, apical 13-16) of one map kind and sequence, as the study
bullseye on the console shows them. Per level a TID 1501 group for the slice's myocardium (its mean, median and SD,
wall thickness, predicted Dice, the image's motion finding), and per AHA segment a TID 1501 group with the segment
as Finding Site: mean, median and SD (T1 or T2, ms), wall thickness, and when motion detection ran the motion
finding (present/absent) and probability. Each group references the map image its values were measured on.
Where the quality model doubts a slice's contours its values are left out (the findings and the predicted Dice
stay), as on the console.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset

from inference.aha import LEVEL_SEGMENTS, AhaLevel
from inference.mapping import MapKind
from reports import codes
from reports.result_summary import RegionFigures, SliceFigures
from reports.sr_measurement import algorithm_identification, derived_uid, measurement_document, referenced_frames

LOGGER = logging.getLogger(__name__)

#: DICOM's limit on Series Description (VR LO).
MAX_DESCRIPTION_CHARS = 64


@dataclass(frozen=True)
class StudySlice:
    """One level's slice of the study: the map image its values were measured on and its recorded figures."""

    level: AhaLevel
    source: Dataset
    figures: SliceFigures


def _values(region: RegionFigures, quantity: hd.sr.CodedConcept) -> list[hd.sr.Measurement]:
    candidates = [
        (quantity, region.mean_ms, codes.UNIT_MS, codes.MEAN),
        (quantity, region.median_ms, codes.UNIT_MS, codes.MEDIAN),
        (quantity, region.sd_ms, codes.UNIT_MS, codes.STANDARD_DEVIATION),
        (codes.WALL_THICKNESS, region.wall_thickness_mm, codes.UNIT_MM, codes.MEAN),
    ]
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)
            for name, value, unit, derivation in candidates if value is not None]


def _motion(present: bool) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=codes.MOTION_ARTEFACT, value=codes.PRESENT if present else codes.ABSENT)


def _level_groups(item: StudySlice, kind: MapKind, algorithm: hd.sr.AlgorithmIdentification,
                  sop_instance_uid: str) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    figures = item.figures
    if figures.status != "analysed":
        raise ValueError(f"the {item.level.value} slice was not analysed: {figures.reason}")
    quantity = codes.quantity_of(kind)
    doubtful = figures.quality is not None and figures.quality.doubtful
    motion = figures.motion
    source = [hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=item.source.SOPClassUID,
        referenced_sop_instance_uid=item.source.SOPInstanceUID,
        referenced_frame_numbers=referenced_frames(item.source),
    )]

    def group(name: str, measurements: list[hd.sr.Measurement], evaluations: list[hd.sr.QualitativeEvaluation],
              site: hd.sr.CodedConcept | None = None) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        identifier = f"study {kind.value} {item.level.value} {name}"
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=derived_uid(sop_instance_uid, identifier),
                                                         identifier=identifier),
            finding_type=codes.LEFT_VENTRICLE_MYOCARDIUM,
            finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
            algorithm_id=algorithm,
            measurements=measurements or None,
            qualitative_evaluations=evaluations or None,
            source_images=source,
        )

    measurements = [] if doubtful or figures.myocardium is None else _values(figures.myocardium, quantity)
    if figures.quality is not None and figures.quality.predicted_dice is not None:
        measurements.append(hd.sr.Measurement(name=codes.PREDICTED_DICE, value=figures.quality.predicted_dice,
                                              unit=codes.UNIT_ONE))
    if motion is not None and motion.whole_image_probability is not None:
        measurements.append(hd.sr.Measurement(name=codes.MOTION_PROBABILITY, value=motion.whole_image_probability,
                                              unit=codes.UNIT_ONE))
    groups = [group("myocardium", measurements, [_motion(motion.has_motion)] if motion is not None else [])]
    for segment in LEVEL_SEGMENTS[item.level]:
        region = figures.segments.get(segment)
        values = [] if doubtful or region is None else _values(region, quantity)
        evaluations = []
        if motion is not None:
            evaluations.append(_motion(segment in motion.segments_with_motion))
            if region is not None and region.motion_probability is not None:
                values.append(hd.sr.Measurement(name=codes.MOTION_PROBABILITY, value=region.motion_probability,
                                                unit=codes.UNIT_ONE))
        groups.append(group(f"AHA segment {segment}", values, evaluations, codes.AHA_SEGMENTS[segment]))
    return groups


def build_study_report(
    slices: Sequence[StudySlice],
    kind: MapKind,
    *,
    series_description: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    algorithm_version: str,
    model_versions: dict[str, str] | None = None,
    previous_versions: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the study's TID 1500 report of the AHA segments, one analysed slice per level.

    ``previous_versions`` are the study reports this one replaces (a slice arrived late or was analysed again):
    they are named in its Predecessor Documents Sequence.

    Raises
    ------
    ValueError
        If no slice is given, two slices have one level, a slice was not analysed, or the series description does
        not fit DICOM's 64 characters.
    """
    if not slices:
        raise ValueError("a study report needs at least one analysed slice")
    levels = [item.level for item in slices]
    if len(set(levels)) != len(levels):
        raise ValueError(f"one slice per level, got {[level.value for level in levels]}")
    if not series_description or len(series_description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"a series description must have 1 to {MAX_DESCRIPTION_CHARS} characters")
    algorithm = algorithm_identification(algorithm_version, model_versions)
    ordered = sorted(slices, key=lambda item: list(AhaLevel).index(item.level))
    groups = [group for item in ordered for group in _level_groups(item, MapKind(kind), algorithm, sop_instance_uid)]
    sources = list({str(item.source.SOPInstanceUID): item.source for item in ordered}.values())
    document = measurement_document(
        groups, sources, series_description=series_description, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid, instance_number=1,
        previous_versions=previous_versions,
    )
    LOGGER.debug("study report %s: %d levels, %d groups", sop_instance_uid, len(ordered), len(groups))
    return document


__all__ = ["StudySlice", "build_study_report"]
