"""The node's findings on the map slices as a TID 1500 Measurement Report (Comprehensive 3D SR), built with highdicom.

Per slice the report holds planar ROI groups (TID 1410) whose regions are closed POLYLINE SCOORDs on the source map:

- the endocardial and the epicardial contour, each with the area it encloses;
- the myocardium: one polygon that runs along the epicardium, crosses the wall at a segment border, runs back along
  the endocardium and crosses again (a ring cut open once, so its inside is the myocardium); with the map's mean,
  median and SD (T1 or T2, ms), the area and mean wall thickness, and the predicted Dice of the segmentation;
- each AHA segment: the annular sector between its two borders, with the same statistics, its wall thickness and,
  when motion detection ran, a motion artefact finding (present/absent) and its probability.

When motion detection ran, a TID 1501 group for the whole image holds the image's motion finding and probability.
Each planar group names the structure it outlines with the Finding Category, Finding and Finding Site with which the
SEG codes the same structure (:class:`reports.codes.Structure`); a segment's Finding Site is its AHA segment.
Codes are in :mod:`reports.codes`; the private ones are listed in docs/conformance.md. Non-finite values (a segment
without valid map pixels) are left out rather than written as numbers.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage

from inference.aha import AhaLevel, display_angle_deg, segment_of_angle
from inference.mapping import MapKind
from inference.myocardium_values import RegionValues
from inference.slice_analysis import ALGORITHM_NAME, SliceAnalysis
from reports import codes
from reports.map_mr import SOFTWARE_VERSION, unique_images
from reports.uids import name_based_uid

LOGGER = logging.getLogger(__name__)

SERIES_DESCRIPTION = "myomap measurements"
#: Fixed Device Observer UID of the node's analysis software (TID 1004).
DEVICE_OBSERVER_UID = name_based_uid("myomap", "device-observer")
#: Largest angular step (deg) between the points of an arc of a segment polygon.
_ARC_STEP_DEG = 3.0


def derived_uid(base_uid: str, *labels: object) -> str:
    """A ``2.25`` UID derived from another UID and labels, so that rebuilding an object gives the same UIDs."""
    return name_based_uid("myomap-sr", base_uid, *labels)


def referenced_frames(source: Dataset) -> list[int] | None:
    """None: a reference applies to all frames, and a map of one slice (single- or multi-frame) has one frame.

    (dciodvfy, like some readers, takes a Parametric Map for single-frame and rejects frame numbers on it.)
    """
    if int(source.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError("a source map must hold one slice (one frame), got "
                         f"{source.NumberOfFrames} frames in {source.SOPInstanceUID}")
    return None


def source_reference(source: Dataset) -> hd.sr.SourceImageForRegion:
    """The reference of a region to the source map."""
    return hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=source.SOPClassUID,
        referenced_sop_instance_uid=source.SOPInstanceUID,
        referenced_frame_numbers=referenced_frames(source),
    )


def closed_polyline(points_px: np.ndarray, source: Dataset) -> hd.sr.ImageRegion:
    """A closed POLYLINE region from (x, y) points whose origin is the centre of the top-left pixel.

    SCOORD image coordinates put the top-left corner of the top-left pixel at (0, 0), so half a pixel is added;
    the first point is repeated at the end, which closes the polyline.
    """
    points = np.asarray(points_px, dtype=np.float64) + 0.5
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 3:
        raise ValueError(f"a closed contour needs at least 3 (x, y) points, got shape {points.shape}")
    if not np.allclose(points[0], points[-1]):
        points = np.vstack([points, points[:1]])
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=points.astype(np.float32),
        source_image=source_reference(source),
    )


def polygon_area_mm2(points_px: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """Area enclosed by a closed (x, y) pixel polygon, in mm2 (shoelace formula)."""
    points = np.asarray(points_px, dtype=np.float64)
    x, y = points[:, 0], points[:, 1]
    area_px = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return area_px * float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])


def _arc_px(contour_px: np.ndarray, centre_px: tuple[float, float], spacing: tuple[float, float],
            start_deg: float, width_deg: float) -> np.ndarray:
    """Points of a star-shaped closed contour from display angle ``start_deg`` counter-clockwise over ``width_deg``.

    The radius at each angle is interpolated between the contour's points, as the wall thickness is measured
    (inference.aha.wall_thickness_mm), so the arc ends lie exactly on the segment borders.
    """
    contour = np.asarray(contour_px, dtype=np.float64)
    row_mm, column_mm = spacing
    cx, cy = centre_px
    theta = display_angle_deg(contour[:, 0], contour[:, 1], centre_px, spacing)
    radius_mm = np.hypot((contour[:, 0] - cx) * column_mm, (contour[:, 1] - cy) * row_mm)
    order = np.argsort(theta)
    relative = np.mod(theta - start_deg, 360.0)
    steps = max(2, int(np.ceil(width_deg / _ARC_STEP_DEG)) + 1)
    angles = np.unique(np.concatenate([np.linspace(0.0, width_deg, steps), relative[relative < width_deg]]))
    angles = start_deg + angles
    radius = np.interp(np.mod(angles, 360.0), theta[order], radius_mm[order], period=360.0)
    radians = np.radians(angles)
    return np.column_stack([cx + radius * np.cos(radians) / column_mm, cy - radius * np.sin(radians) / row_mm])


def segment_sectors(analysis: SliceAnalysis) -> dict[int, tuple[float, float]]:
    """AHA segment -> (start, width) in display degrees, with the borders that inference.aha.aha_segments uses."""
    spacing = analysis.pixel_spacing_mm
    centre = analysis.lv_centre_px
    anterior = float(display_angle_deg(*analysis.anterior_insertion_px, centre, spacing))
    inferior = float(display_angle_deg(*analysis.inferior_insertion_px, centre, spacing))
    span = float(np.mod(inferior - anterior, 360.0))
    if AhaLevel(analysis.level) is AhaLevel.APICAL:
        start, width, count = anterior + span / 2.0 - 45.0, 90.0, 4
    else:
        start, width, count = anterior, 60.0, 6
    sectors = {}
    for index in range(count):
        sector_start = float(np.mod(start + index * width, 360.0))
        middle = np.array([sector_start + width / 2.0])
        sectors[int(segment_of_angle(middle, analysis.level, anterior, span)[0])] = (sector_start, width)
    return sectors


def sector_polygon_px(analysis: SliceAnalysis, start_deg: float, width_deg: float) -> np.ndarray:
    """The myocardium between two display angles: epicardial arc out, endocardial arc back."""
    spacing, centre = analysis.pixel_spacing_mm, analysis.lv_centre_px
    outer = _arc_px(analysis.contours.epi_px, centre, spacing, start_deg, width_deg)
    inner = _arc_px(analysis.contours.endo_px, centre, spacing, start_deg, width_deg)
    return np.vstack([outer, inner[::-1]])


def ring_polygon_px(endo_px: np.ndarray, epi_px: np.ndarray) -> np.ndarray:
    """The ring between two closed contours as one polygon, cut open where the two lie closest to each other.

    It runs once round the epicardium, crosses to the endocardium, runs round it the other way and crosses back;
    the two crossings coincide, so the polygon's inside is exactly the ring.
    """
    endo = np.asarray(endo_px, dtype=np.float64)
    epi = np.asarray(epi_px, dtype=np.float64)
    distance = np.hypot(epi[:, None, 0] - endo[None, :, 0], epi[:, None, 1] - endo[None, :, 1])
    i, j = np.unravel_index(int(np.argmin(distance)), distance.shape)
    outer = np.roll(epi, -i, axis=0)
    inner = np.roll(endo, -j, axis=0)
    return np.vstack([outer, outer[:1], inner[:1], inner[::-1]])


def algorithm_identification(algorithm_version: str, model_versions: dict[str, str] | None = None
                             ) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification of the node's analysis, the model versions as parameters."""
    parameters = [f"{name} {version}" for name, version in sorted((model_versions or {}).items())]
    return hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=algorithm_version,
                                         parameters=parameters or None)


def observation_context() -> hd.sr.ObservationContext:
    """TID 1001 with the node's analysis software as the device observer."""
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE_OBSERVER,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=DEVICE_OBSERVER_UID, name=ALGORITHM_NAME, manufacturer_name="myomap",
                model_name=ALGORITHM_NAME,
            ),
        )
    )


def _frame_value(source: Dataset, sequence: str, keyword: str) -> object:
    """An attribute of frame 1 of a multi-frame image: per-frame functional group first, then shared."""
    for groups in (source.get("PerFrameFunctionalGroupsSequence"), source.get("SharedFunctionalGroupsSequence")):
        if groups and sequence in groups[0] and keyword in groups[0][sequence].value[0]:
            return groups[0][sequence].value[0][keyword].value
    return None


def _library_view(source: Dataset) -> Dataset:
    """What highdicom's image library (TID 1601/1604) needs to describe ``source``, as a single-frame MR image.

    highdicom 0.28 describes only the SOP classes it lists (not Parametric Map) and reads the geometry of
    single-frame images only. The view is a shallow copy with frame 1's geometry at the top level and, for a
    multi-frame map, the MR Image class (the maps are MR-derived, so the library's modality code is MR);
    :func:`_restore_library_classes` puts the real class back into the library entry. A view without complete
    geometry is described by modality, rows and columns only.
    """
    view = copy.copy(source)
    if "NumberOfFrames" in source:
        for sequence, keyword in (("PixelMeasuresSequence", "PixelSpacing"),
                                  ("PixelMeasuresSequence", "SliceThickness"),
                                  ("PlaneOrientationSequence", "ImageOrientationPatient"),
                                  ("PlanePositionSequence", "ImagePositionPatient")):
            value = _frame_value(source, sequence, keyword)
            if value is not None:
                setattr(view, keyword, value)
        view.SOPClassUID = MRImageStorage
    complete = all(view.get(keyword) not in (None, "") for keyword in
                   ("PixelSpacing", "SliceThickness", "ImageOrientationPatient", "ImagePositionPatient"))
    # Only in the view: "MR" makes highdicom describe the geometry (a Parametric Map may say "OT"), "OT" makes it
    # leave out what it cannot read.
    view.Modality = "MR" if complete else "OT"
    return view


def _restore_library_classes(report: hd.sr.MeasurementReport, sources: Sequence[Dataset]) -> None:
    """Put the sources' own SOP classes back into the image library entries made from their views."""
    classes = {str(source.SOPInstanceUID): source.SOPClassUID for source in sources}
    pending = list(report)
    while pending:
        item = pending.pop()
        for reference in item.get("ReferencedSOPSequence", []):
            uid = str(reference.ReferencedSOPInstanceUID)
            if uid in classes:
                reference.ReferencedSOPClassUID = classes[uid]
        pending.extend(item.get("ContentSequence", []))


def finish_document(report: hd.sr.Comprehensive3DSR, series_description: str) -> hd.sr.Comprehensive3DSR:
    """Attributes highdicom leaves to the caller: series description, equipment, the private coding scheme."""
    report.SeriesDescription = series_description
    report.ManufacturerModelName = ALGORITHM_NAME
    report.SoftwareVersions = SOFTWARE_VERSION
    report.CodingSchemeIdentificationSequence = [codes.private_coding_scheme()]
    return report


def measurement_report(groups: Sequence, sources: Sequence[Dataset]) -> hd.sr.MeasurementReport:
    """TID 1500 content: observation context, procedure, image library of the sources and the groups."""
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(),
        procedure_reported=codes.PROCEDURE_CARDIAC_MR,
        imaging_measurements=groups,
        referenced_images=[_library_view(source) for source in sources],
    )
    _restore_library_classes(report, sources)
    return report


def measurement_document(
    groups: Sequence,
    sources: Sequence[Dataset],
    *,
    series_description: str,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    instance_number: int,
    previous_versions: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """A complete Comprehensive 3D SR holding the TID 1500 report of ``groups`` on ``sources``; it replaces
    ``previous_versions`` (named in its Predecessor Documents Sequence)."""
    document = hd.sr.Comprehensive3DSR(
        evidence=sources,
        content=measurement_report(groups, sources),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer="myomap",
        is_complete=True,
        previous_versions=list(previous_versions) or None,
    )
    return finish_document(document, series_description)


def structure_group(
    tracking_identifier: hd.sr.TrackingIdentifier, region: hd.sr.ImageRegion, structure: codes.Structure,
    algorithm: hd.sr.AlgorithmIdentification, measurements: Sequence[hd.sr.Measurement] | None = None,
    evaluations: Sequence[hd.sr.QualitativeEvaluation] | None = None, site: hd.sr.CodedConcept | None = None,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group of a region outlining ``structure``: its category, property type and anatomic region as the
    Finding Category, Finding and Finding Site, as the SEG codes its segments; ``site`` (an AHA segment) replaces
    the anatomic region as the Finding Site."""
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking_identifier,
        referenced_region=region,
        finding_type=structure.property_type,
        finding_category=structure.category,
        finding_sites=[hd.sr.FindingSite(site if site is not None else structure.region)],
        algorithm_id=algorithm,
        measurements=list(measurements or []) or None,
        qualitative_evaluations=list(evaluations or []) or None,
    )


def check_slice(source: Dataset, analysis: SliceAnalysis) -> None:
    """The analysis must lie on the source's pixel grid."""
    if not isinstance(source, Dataset):
        raise TypeError(f"source must be a pydicom Dataset, got {type(source).__name__}")
    shape = (int(source.Rows), int(source.Columns))
    if np.shape(analysis.map_ms) != shape:
        raise ValueError(f"the analysis map {np.shape(analysis.map_ms)} does not match the source image {shape}")
    referenced_frames(source)


def _region_measurements(values: RegionValues, quantity: hd.sr.CodedConcept,
                         area_mm2: float | None = None) -> list[hd.sr.Measurement]:
    """Mean, median and SD of the region's values and its area (``area_mm2`` when given, else the values')."""
    candidates = [
        (quantity, values.mean, codes.UNIT_MS, codes.MEAN),
        (quantity, values.median, codes.UNIT_MS, codes.MEDIAN),
        (quantity, values.sd, codes.UNIT_MS, codes.STANDARD_DEVIATION),
        (codes.AREA, values.area_mm2 if area_mm2 is None else area_mm2, codes.UNIT_MM2, None),
    ]
    return [_measurement(name, value, unit, derivation) for name, value, unit, derivation in candidates
            if np.isfinite(value)]


def _measurement(name: hd.sr.CodedConcept, value: float, unit: hd.sr.CodedConcept,
                 derivation: hd.sr.CodedConcept | None = None) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=unit, derivation=derivation)


def _finite(name: hd.sr.CodedConcept, value: float | None, unit: hd.sr.CodedConcept,
            derivation: hd.sr.CodedConcept | None = None) -> list[hd.sr.Measurement]:
    return [] if value is None or not np.isfinite(value) else [_measurement(name, value, unit, derivation)]


def _motion_evaluation(present: bool) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=codes.MOTION_ARTEFACT, value=codes.PRESENT if present else codes.ABSENT)


def _slice_groups(
    index: int, source: Dataset, analysis: SliceAnalysis, algorithm: hd.sr.AlgorithmIdentification,
    sop_instance_uid: str, comparison: SliceComparison | None = None,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations]:
    check_slice(source, analysis)
    spacing = analysis.pixel_spacing_mm
    quantity = codes.quantity_of(MapKind(analysis.map_kind))
    label = f"slice {index} ({AhaLevel(analysis.level).value})"

    def tracking(name: str) -> hd.sr.TrackingIdentifier:
        return hd.sr.TrackingIdentifier(uid=derived_uid(sop_instance_uid, index, name), identifier=f"{label} {name}")

    def planar(name: str, polygon_px: np.ndarray, structure: codes.Structure, measurements: list,
               evaluations: list | None = None, site: hd.sr.CodedConcept | None = None
               ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        return structure_group(tracking(name), closed_polyline(polygon_px, source), structure, algorithm,
                               measurements, evaluations, site)

    contours = analysis.contours
    motion = analysis.motion
    groups: list = [
        planar("endocardial contour", contours.endo_px, codes.LV_BLOOD_POOL,
               [_measurement(codes.ENDOCARDIAL_AREA, polygon_area_mm2(contours.endo_px, spacing), codes.UNIT_MM2)]),
        planar("epicardial contour", contours.epi_px, codes.LV_WHOLE,
               [_measurement(codes.EPICARDIAL_AREA, polygon_area_mm2(contours.epi_px, spacing), codes.UNIT_MM2)]),
    ]
    sectors = segment_sectors(analysis)
    myocardium = (
        _region_measurements(analysis.myocardium_values, quantity, analysis.ring_values.area_mm2)
        + _finite(codes.WALL_THICKNESS, analysis.wall_thickness.mean_mm, codes.UNIT_MM, codes.MEAN)
        + _finite(codes.PREDICTED_DICE, analysis.quality.predicted_dice, codes.UNIT_ONE)
    )
    if comparison is not None:
        myocardium += _finite(codes.CROSS_CHECK_DIFFERENCE, comparison.cross_check_percent, codes.UNIT_PERCENT,
                              codes.MEDIAN)
        myocardium += _finite(codes.SECOND_T1_ESTIMATE, comparison.second_estimate_mean_ms, codes.UNIT_MS,
                              codes.MEAN)
    groups.append(planar("myocardium", ring_polygon_px(contours.endo_px, contours.epi_px),
                         codes.LV_MYOCARDIUM, myocardium))
    for segment, (start_deg, width_deg) in sorted(sectors.items()):
        measurements = []
        if segment in analysis.segment_values:
            measurements += _region_measurements(analysis.segment_values[segment], quantity)
        measurements += _finite(codes.WALL_THICKNESS, analysis.wall_thickness.per_segment_mm.get(segment),
                                codes.UNIT_MM, codes.MEAN)
        evaluations = []
        if motion is not None and segment in motion.segment_probabilities:
            probability = motion.segment_probabilities[segment]
            measurements += _finite(codes.MOTION_PROBABILITY, probability, codes.UNIT_ONE)
            evaluations.append(_motion_evaluation(segment in motion.motion_segments))
        groups.append(planar(f"AHA segment {segment}", sector_polygon_px(analysis, start_deg, width_deg),
                             codes.LV_MYOCARDIUM, measurements, evaluations, codes.AHA_SEGMENTS[segment]))
    if motion is not None:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking("whole image"),
            algorithm_id=algorithm,
            measurements=_finite(codes.MOTION_PROBABILITY, motion.whole_image_probability, codes.UNIT_ONE) or None,
            qualitative_evaluations=[_motion_evaluation(motion.has_motion)],
            source_images=[hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=source.SOPClassUID,
                referenced_sop_instance_uid=source.SOPInstanceUID,
                referenced_frame_numbers=referenced_frames(source),
            )],
        ))
    return groups


@dataclass(frozen=True)
class SliceComparison:
    """What a slice's report adds beyond the analysis: how the node's other maps of it compare."""

    cross_check_percent: float | None = None  # node reconstruction vs the scanner's map, median % in the region
    second_estimate_label: str | None = None  # e.g. "node reconstruction, Bloch-corrected"
    second_estimate_mean_ms: float | None = None
    second_estimate_median_ms: float | None = None


def build_measurement_report(
    slices: Sequence[tuple[Dataset, SliceAnalysis]],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    algorithm_version: str,
    model_versions: dict[str, str],
    previous_versions: Sequence[Dataset] = (),
    comparisons: Sequence[SliceComparison | None] = (),
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report of the analysed slices.

    Parameters
    ----------
    slices
        (source map image, analysis of it) per slice, in the order the report lists them; all of one study.
    series_instance_uid, sop_instance_uid, series_number, instance_number
        Identification of the new SR series and instance.
    algorithm_version
        Version of the analysis (written as the algorithm version of every group).
    model_versions
        Model name -> version, written as algorithm parameters.
    previous_versions
        SRs of an earlier analysis of the same slices that this report replaces (Predecessor Documents Sequence).
    comparisons
        Per slice (in the order of ``slices``; missing or None for none): the cross-check against the scanner's map
        and the second T1 estimate, written as measurements of the myocardium.

    Raises
    ------
    ValueError
        If no slice is given or an analysis does not match its source image's matrix.
    """
    if not slices:
        raise ValueError("a measurement report needs at least one analysed slice")
    algorithm = algorithm_identification(algorithm_version, model_versions)
    groups = []
    for index, (source, analysis) in enumerate(slices, start=1):
        comparison = comparisons[index - 1] if index - 1 < len(comparisons) else None
        groups += _slice_groups(index, source, analysis, algorithm, sop_instance_uid, comparison)
    sources = unique_images([source for source, _ in slices])
    document = measurement_document(
        groups, sources, series_description=SERIES_DESCRIPTION, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid, instance_number=instance_number,
        previous_versions=previous_versions,
    )
    LOGGER.debug("measurement report %s: %d slices, %d groups", sop_instance_uid, len(slices), len(groups))
    return document


__all__ = [
    "DEVICE_OBSERVER_UID", "SERIES_DESCRIPTION", "algorithm_identification", "build_measurement_report",
    "closed_polyline", "derived_uid", "observation_context", "polygon_area_mm2", "ring_polygon_px",
    "sector_polygon_px", "segment_sectors", "structure_group",
]
