"""TID 1500 Measurement Report of the node's analysis: dciodvfy-clean, and read back by highdicom with the values of
the analysis, on the node's MR maps (several slices, T1 and T2) and on the phantom's scanner maps (Siemens and
Philips MR Image, GE and Enhanced Parametric Map).

The analyses are built from phantom truth (:mod:`tests.report_builders`), because the models are not part of these
tests. The dcmqi TID 1500 fixture (../shared/data/sr, BSD-3-Clause, QIICR/dcmqi) is read the same way as ours.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from skimage.draw import polygon2mask

from inference.aha import LEVEL_SEGMENTS
from inference.mapping import MapKind
from inference.myocardium_values import RegionValues
from inference.slice_analysis import SliceAnalysis
from phantom.model import Vendor
from reports import codes
from reports.sr_measurement import (
    build_measurement_report,
    ring_polygon_px,
    sector_polygon_px,
    segment_sectors,
)
from tests.report_builders import (
    ALGORITHM_VERSION,
    dciodvfy_errors,
    groups_by_identifier,
    library_references,
    measurement_values,
    node_map_slices,
    phantom_map_slice,
)
from tests.shared_data import SHARED_DATA

MODEL_VERSIONS = {"segmentation": "1.2.0", "motion": "0.9.1", "qc": "1.0.0"}


# --- reading a report back --------------------------------------------------------------------------------------------


def motion_finding(group: object) -> str | None:
    evaluations = group.get_qualitative_evaluations(name=codes.MOTION_ARTEFACT)
    return evaluations[0].value.meaning if evaluations else None


def build(slices: list[tuple[Dataset, SliceAnalysis]]) -> hd.sr.Comprehensive3DSR:
    return build_measurement_report(slices, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                                    series_number=1003, algorithm_version=ALGORITHM_VERSION,
                                    model_versions=MODEL_VERSIONS)


def assert_region_values(values: dict, expected: RegionValues, quantity: str, area_mm2: float | None = None) -> None:
    """The region's values in the report; its area is ``area_mm2`` when given (the myocardium's whole ring). A region
    without a value (too few pixels with one) has no T1/T2 in the report, never a made-up one."""
    if not np.isfinite(expected.mean):
        assert expected.reason and (quantity, "Mean") not in values and (quantity, "Median") not in values
        return
    assert values[(quantity, "Mean")] == (pytest.approx(expected.mean), "ms")
    assert values[(quantity, "Median")] == (pytest.approx(expected.median), "ms")
    assert values[(quantity, "Standard Deviation")] == (pytest.approx(expected.sd), "ms")
    assert values[("Area", None)] == (pytest.approx(expected.area_mm2 if area_mm2 is None else area_mm2), "mm2")


# --- tests ------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_node_maps_report_holds_the_analysis_values(tmp_path: Path) -> None:
    slices = node_map_slices(motion_by_level={"basal": (1, 4, 5)}, with_t2=True)
    assert [a.map_kind for _, a in slices] == [MapKind.T1, MapKind.T1, MapKind.T1, MapKind.T2]
    report = build(slices)
    assert dciodvfy_errors(report, tmp_path / "sr.dcm") == []

    read = hd.sr.srread(tmp_path / "sr.dcm")
    assert read.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert read.SeriesDescription == "myomap measurements"
    assert read.StudyInstanceUID == slices[0][0].StudyInstanceUID
    groups = groups_by_identifier(read)
    for index, (source, analysis) in enumerate(slices, start=1):
        label = f"slice {index} ({analysis.level.value})"
        quantity = "T1" if analysis.map_kind is MapKind.T1 else "T2"
        myocardium = groups[f"{label} myocardium"]
        values = measurement_values(myocardium)
        assert_region_values(values, analysis.myocardium_values, quantity, analysis.ring_values.area_mm2)
        assert values[("Wall Thickness", "Mean")] == (pytest.approx(analysis.wall_thickness.mean_mm), "mm")
        assert values[(codes.PREDICTED_DICE.meaning, None)] == (pytest.approx(analysis.quality.predicted_dice), "1")
        assert myocardium.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
            source.SOPInstanceUID
        endo = groups[f"{label} endocardial contour"].roi
        assert endo.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        np.testing.assert_allclose(endo.value[:-1], analysis.contours.endo_px + 0.5, atol=1e-3)
        np.testing.assert_allclose(endo.value[-1], endo.value[0])
        np.testing.assert_allclose(groups[f"{label} epicardial contour"].roi.value[:-1],
                                   analysis.contours.epi_px + 0.5, atol=1e-3)
        for segment in LEVEL_SEGMENTS[analysis.level]:
            group = groups[f"{label} AHA segment {segment}"]
            assert group.finding_sites[0].value == codes.AHA_SEGMENTS[segment]
            values = measurement_values(group)
            assert_region_values(values, analysis.segment_values[segment], quantity)
            assert values[("Wall Thickness", "Mean")][0] == pytest.approx(
                analysis.wall_thickness.per_segment_mm[segment])
            if analysis.motion is None:
                assert motion_finding(group) is None
                continue
            expected = "Present" if segment in analysis.motion.motion_segments else "Absent"
            assert motion_finding(group) == expected
            assert values[(codes.MOTION_PROBABILITY.meaning, None)][0] == pytest.approx(
                analysis.motion.segment_probabilities[segment])
        whole = groups.get(f"{label} whole image")
        if analysis.motion is None:
            assert whole is None
        else:
            assert motion_finding(whole) == ("Present" if analysis.motion.has_motion else "Absent")
    assert motion_finding(groups["slice 1 (basal) AHA segment 4"]) == "Present"
    assert motion_finding(groups["slice 1 (basal) whole image"]) == "Present"
    assert motion_finding(groups["slice 2 (mid) whole image"]) == "Absent"

    # Algorithm name and version in every group; the image library lists every source map.
    for group in groups.values():
        names = [item.TextValue for item in hd.sr.utils.find_content_items(group[0], recursive=True)
                 if item.ConceptNameCodeSequence[0].CodeValue in ("111001", "111003")]
        assert names == ["myomap", ALGORITHM_VERSION]
    assert library_references(read) == [(source.SOPClassUID, source.SOPInstanceUID) for source, _ in slices]
    parameters = [item.TextValue for item in hd.sr.utils.find_content_items(read, recursive=True)
                  if item.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert "segmentation 1.2.0" in parameters
    assert read.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == codes.PRIVATE_SCHEME


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(Vendor), ids=lambda v: v.value)
def test_scanner_maps_as_sources(vendor: Vendor, phantom_folders: dict[Vendor, Path], tmp_path: Path) -> None:
    source, analysis = phantom_map_slice(phantom_folders[vendor], motion_segments=(8,))
    report = build([(source, analysis)])
    assert dciodvfy_errors(report, tmp_path / "sr.dcm") == []
    read = hd.sr.srread(tmp_path / "sr.dcm")
    groups = groups_by_identifier(read)
    reference = groups["slice 1 (mid) myocardium"].roi.ContentSequence[0].ReferencedSOPSequence[0]
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == \
        (source.SOPClassUID, source.SOPInstanceUID)
    assert "ReferencedFrameNumber" not in reference  # a one-slice map: the reference applies to its only frame
    values = measurement_values(groups["slice 1 (mid) myocardium"])
    assert values[("T1", "Mean")][0] == pytest.approx(analysis.myocardium_values.mean)
    assert motion_finding(groups["slice 1 (mid) AHA segment 8"]) == "Present"
    assert motion_finding(groups["slice 1 (mid) AHA segment 9"]) == "Absent"
    assert library_references(read) == [(source.SOPClassUID, source.SOPInstanceUID)]
    evidence = read.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_segment_polygons_cover_their_segments() -> None:
    _, analysis = node_map_slices()[1]
    shape = analysis.map_ms.shape
    sectors = segment_sectors(analysis)
    assert sorted(sectors) == list(LEVEL_SEGMENTS[analysis.level])
    for segment, (start_deg, width_deg) in sectors.items():
        # polygon2mask wants (row, column); the polygon is (x, y) with the pixel centre at 0.
        polygon = sector_polygon_px(analysis, start_deg, width_deg)
        inside = polygon2mask(shape, polygon[:, ::-1])
        labelled = analysis.aha_segment_map == segment
        assert np.count_nonzero(inside & labelled) / np.count_nonzero(labelled) > 0.85
    ring = polygon2mask(shape, ring_polygon_px(analysis.contours.endo_px, analysis.contours.epi_px)[:, ::-1])
    myocardium = analysis.segmentation.myocardium_mask
    overlap = 2 * np.count_nonzero(ring & myocardium) / (np.count_nonzero(ring) + np.count_nonzero(myocardium))
    assert overlap > 0.85


def test_non_finite_values_are_left_out(tmp_path: Path) -> None:
    source, analysis = node_map_slices()[1]
    empty = RegionValues(np.nan, np.nan, np.nan, np.nan, 0, 12.5)
    segment_values_ = {**analysis.segment_values, 7: empty}
    build([(source, dataclasses.replace(analysis, segment_values=segment_values_))]).save_as(
        tmp_path / "sr.dcm", enforce_file_format=True)
    values = measurement_values(groups_by_identifier(hd.sr.srread(tmp_path / "sr.dcm"))["slice 1 (mid) AHA segment 7"])
    assert ("T1", "Mean") not in values
    assert values[("Area", None)] == (pytest.approx(12.5), "mm2")


def test_rejects_an_analysis_of_another_matrix() -> None:
    source, analysis = node_map_slices()[1]
    source.Rows = int(source.Rows) - 1
    with pytest.raises(ValueError, match="does not match the source image"):
        build([(source, analysis)])
    with pytest.raises(ValueError, match="at least one"):
        build([])


def report_summary(path: Path) -> dict[str, object]:
    """What a consumer reads from any TID 1500 report with highdicom's generic API."""
    report = hd.sr.srread(path)
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    groups = [*content.get_planar_roi_measurement_groups(), *content.get_volumetric_roi_measurement_groups(),
              *content.get_image_measurement_groups()]
    measurements = [m for group in groups for m in group.get_measurements()]
    return {
        "title": report.ContentSequence and report.ConceptNameCodeSequence[0].CodeValue,
        "observer_types": [c.observer_type.meaning for c in content.get_observer_contexts()],
        "groups": len(groups),
        "tracking": [(g.tracking_identifier, g.tracking_uid) for g in groups],
        "units": {m.unit.scheme_designator for m in measurements},
        "values": [float(m.value) for m in measurements],
    }


@pytest.mark.filterwarnings("ignore:The string")  # the fixture's single-component person name
def test_read_like_the_dcmqi_fixture(tmp_path: Path) -> None:
    theirs = report_summary(SHARED_DATA / "sr" / "dcmqi_tid1500_sr.dcm")
    source, analysis = node_map_slices()[1]
    build([(source, analysis)]).save_as(tmp_path / "ours.dcm", enforce_file_format=True)
    ours = report_summary(tmp_path / "ours.dcm")
    for summary in (theirs, ours):
        assert summary["title"] == "126000"  # Imaging Measurement Report
        assert summary["groups"] > 0 and summary["values"]
        assert summary["units"] == {"UCUM"}
        assert all(identifier and uid for identifier, uid in summary["tracking"])
        assert all(np.isfinite(summary["values"]))
    assert theirs["observer_types"] == ["Person"]
    assert ours["observer_types"] == ["Device"]


def test_private_codes_are_in_the_conformance_statement() -> None:
    statement = (Path(__file__).resolve().parents[3] / "docs" / "conformance.md").read_text()
    private = [value for value in vars(codes).values()
               if isinstance(value, hd.sr.CodedConcept) and value.scheme_designator == codes.PRIVATE_SCHEME]
    private += list(codes.ERROR_MODES.values())
    assert len(private) > 10
    for code in private:
        assert f"| {code.value} | {code.meaning} |" in statement
