"""TID 1500 Measurement Report of the node's analysis: dciodvfy-clean, and read back by highdicom with the values of
the analysis, on the node's MR maps (several slices, T1 and T2) and on the phantom's scanner maps (Siemens and
Philips MR Image, GE and Enhanced Parametric Map).

The analyses are built here from phantom truth (segmentation masks -> fitted contours, AHA segments, values and
wall thickness with the node's own functions; motion and quality results made directly), because the models are
not part of these tests. The helpers at the top are shared with the SEG, reader comparison and console image tests.
The dcmqi TID 1500 fixture (../shared/data/sr, BSD-3-Clause, QIICR/dcmqi) is read the same way as ours.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage
from skimage.draw import polygon2mask

from inference.aha import LEVEL_SEGMENTS, AhaLevel, aha_segments, rv_insertion_points, wall_thickness_mm
from inference.contour_fit import fit_contours
from inference.grids import mask_centre_px
from inference.mapping import MapKind
from inference.motion import MotionResult
from inference.myocardium_values import RegionValues, region_values, segment_values
from inference.quality import QualityEstimate
from inference.segmentation import Segmentation
from inference.slice_analysis import ERODE_MM, SliceAnalysis
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from reports import codes
from reports.map_mr import build_mr_map
from reports.sr_measurement import (
    build_measurement_report,
    ring_polygon_px,
    sector_polygon_px,
    segment_sectors,
)
from tests.dicom_builders import mr_image
from tests.shared_data import SHARED_DATA
from training.phantom_slices import study_cases

DCIODVFY = "/usr/bin/dciodvfy"
SEED = 4242
MOTION_THRESHOLD = 0.5
ALGORITHM_VERSION = "0.1.0"
MODEL_VERSIONS = {"segmentation": "1.2.0", "motion": "0.9.1", "qc": "1.0.0"}


# --- shared helpers ---------------------------------------------------------------------------------------------------


def dciodvfy_errors(dataset: Dataset, path: Path) -> list[str]:
    """Write ``dataset`` to ``path`` and return dciodvfy's "Error" lines."""
    dataset.save_as(path, enforce_file_format=True)
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


def analysis_from_truth(
    map_ms: np.ndarray,
    cavity: np.ndarray,
    myocardium: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    level: AhaLevel | str,
    kind: MapKind,
    *,
    motion_segments: Sequence[int] = (),
    predicted_dice: float = 0.91,
    consensus: np.ndarray | None = None,
) -> SliceAnalysis:
    """A SliceAnalysis from truth masks, measured with the node's functions; motion (T1 only) and quality made up."""
    level = AhaLevel(level)
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
    values = np.nan_to_num(np.asarray(map_ms, dtype=np.float32))
    cavity, myocardium = np.asarray(cavity, dtype=bool), np.asarray(myocardium, dtype=bool)
    contours = fit_contours(cavity, myocardium, spacing)
    centre = mask_centre_px(cavity | myocardium)
    anterior, inferior = rv_insertion_points(myocardium, None, centre, pixel_spacing_mm=spacing)
    segments = aha_segments(myocardium, centre, anterior, level, inferior_insertion_px=inferior,
                            pixel_spacing_mm=spacing)
    motion = None
    if MapKind(kind) is MapKind.T1:
        probabilities = {s: (0.8 if s in motion_segments else 0.1) + 0.005 * s for s in LEVEL_SEGMENTS[level]}
        attention = {}
        for segment in LEVEL_SEGMENTS[level]:
            blob = ndimage.gaussian_filter((segments == segment).astype(np.float32), 3.0)
            attention[segment] = (blob / max(float(blob.max()), 1e-6)).astype(np.float32)
        motion = MotionResult(probabilities, 0.7 if motion_segments else 0.12, attention, MOTION_THRESHOLD)
    probabilities = np.stack([~(cavity | myocardium), cavity, myocardium]).astype(np.float32)
    return SliceAnalysis(
        map_kind=MapKind(kind),
        level=level,
        pixel_spacing_mm=spacing,
        map_ms=values,
        segmentation=Segmentation(cavity, myocardium, probabilities),
        contours=contours,
        lv_centre_px=centre,
        anterior_insertion_px=anterior,
        inferior_insertion_px=inferior,
        aha_segment_map=segments,
        myocardium_values=region_values(values, myocardium, pixel_spacing_mm=spacing, erode_mm=ERODE_MM),
        segment_values=segment_values(values, segments, pixel_spacing_mm=spacing, erode_mm=ERODE_MM),
        wall_thickness=wall_thickness_mm(contours, spacing, centre, anterior, level, inferior_insertion_px=inferior),
        motion=motion,
        quality=QualityEstimate(predicted_dice=predicted_dice, reconstruction_error=0.01, evaluations=40),
        consensus_mask=consensus,
    )


@functools.lru_cache(maxsize=2)
def phantom_cases(seed: int = SEED) -> tuple:
    """The MOLLI (or 5s(3s)3s) and T2-prep cases of phantom study 0, basal to apical."""
    return tuple(study_cases(seed, 0))


def node_map_slices(*, motion_by_level: dict[str, Sequence[int]] | None = None, with_t2: bool = False,
                    consensus_level: str | None = None) -> list[tuple[Dataset, SliceAnalysis]]:
    """(node MR map, analysis) for the basal, mid and apical T1 maps of one phantom study, in one map series, and
    optionally the mid T2 map (its own series), as dicomnode/pipeline.py writes them with build_mr_map."""
    motion_by_level = motion_by_level or {}
    study_uid = generate_uid()
    series_uids = {MapKind.T1: generate_uid(), MapKind.T2: generate_uid()}
    wanted = [case for case in phantom_cases() if case.sequence.value.startswith("molli")]
    wanted += [case for case in phantom_cases() if with_t2 and not case.is_t1 and case.level.value == "mid"]
    slices = []
    for case in wanted:
        kind = MapKind.T1 if case.is_t1 else MapKind.T2
        rows, columns = case.map_ms.shape
        raw = mr_image(study_uid=study_uid, rows=rows, columns=columns, instance_number=len(slices) + 1)
        raw.PixelSpacing = list(case.pixel_spacing_mm)
        raw.ImageOrientationPatient = [0.6, 0.8, 0.0, -0.48, 0.36, -0.8]
        raw.ImagePositionPatient = [-110.0, -80.0, 20.0 + 10.0 * len(slices)]
        raw.MagneticFieldStrength = 1.5
        node_map = build_mr_map(case.map_ms, raw, kind, series_instance_uid=series_uids[kind],
                                sop_instance_uid=generate_uid(), series_number=1001 if kind is MapKind.T1 else 1002,
                                instance_number=len(slices) + 1)
        level = case.level.value
        analysis = analysis_from_truth(case.map_ms, case.cavity_mask, case.myocardium_mask, case.pixel_spacing_mm,
                                       level, kind, motion_segments=motion_by_level.get(level, ()),
                                       consensus=case.reader_masks[0] if level == consensus_level else None)
        slices.append((node_map, analysis))
    return slices


def phantom_study(vendor: Vendor, out_dir: Path) -> Path:
    """One-slice (mid) MOLLI phantom study of ``vendor``, written by the phantom's study generator."""
    plan = plan_study(StudyRequest(seed=SEED, vendor=vendor, sequence=SequenceChoice.MOLLI, n_slices=1,
                                   with_trainees=False), 0)
    return generate_study(plan, out_dir / vendor.value).folder


def map_pixel_spacing_mm(source: Dataset) -> tuple[float, float]:
    spacing = source.PixelSpacing if "PixelSpacing" in source else \
        source.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    return float(spacing[0]), float(spacing[1])


def read_map_values_ms(source: Dataset) -> np.ndarray:
    """Map values in ms of a scanner map: MR Image with its rescale, or a float Parametric Map."""
    pixels = source.pixel_array.astype(np.float32)
    return pixels * float(source.get("RescaleSlope", 1.0)) + float(source.get("RescaleIntercept", 0.0))


def phantom_map_slice(folder: Path, *, motion_segments: Sequence[int] = ()) -> tuple[Dataset, SliceAnalysis]:
    """(scanner map, analysis from the study's truth SEG) of the mid slice of a phantom study."""
    source = pydicom.dcmread(next(folder.glob("mid/*_map/001.dcm")))
    truth = hd.seg.segread(folder / "mid" / "readers" / "truth_seg" / "001.dcm")
    masks = truth.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1, 2])[0]
    myocardium, cavity = masks[..., 0].astype(bool), masks[..., 1].astype(bool)
    analysis = analysis_from_truth(read_map_values_ms(source), cavity, myocardium, map_pixel_spacing_mm(source),
                                   "mid", MapKind.T1, motion_segments=motion_segments)
    return source, analysis


@pytest.fixture(scope="module")
def phantom_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[Vendor, Path]:
    out = tmp_path_factory.mktemp("phantom")
    return {vendor: phantom_study(vendor, out) for vendor in Vendor}


# --- reading a report back --------------------------------------------------------------------------------------------


def measurement_values(group: object) -> dict[tuple[str, str | None], tuple[float, str]]:
    """(concept meaning, derivation meaning) -> (value, UCUM unit) of a measurement group."""
    values = {}
    for measurement in group.get_measurements():
        derivation = measurement.derivation.meaning if measurement.derivation is not None else None
        values[(measurement.name.meaning, derivation)] = (float(measurement.value), measurement.unit.value)
    return values


def motion_finding(group: object) -> str | None:
    evaluations = group.get_qualitative_evaluations(name=codes.MOTION_ARTEFACT)
    return evaluations[0].value.meaning if evaluations else None


def groups_by_identifier(report: hd.sr.Comprehensive3DSR) -> dict[str, object]:
    content = report.content
    groups = [*content.get_planar_roi_measurement_groups(), *content.get_image_measurement_groups()]
    return {group.tracking_identifier: group for group in groups}


def library_references(report: Dataset) -> list[tuple[str, str]]:
    """(SOP class, SOP instance) of the images in the report's Image Library (TID 1600)."""
    library = [item for item in hd.sr.utils.find_content_items(report, value_type="CONTAINER", recursive=True)
               if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert len(library) == 1
    images = hd.sr.utils.find_content_items(library[0], value_type="IMAGE", recursive=True)
    return [(item.ReferencedSOPSequence[0].ReferencedSOPClassUID,
             item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in images]


def build(slices: list[tuple[Dataset, SliceAnalysis]]) -> hd.sr.Comprehensive3DSR:
    return build_measurement_report(slices, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                                    series_number=1003, algorithm_version=ALGORITHM_VERSION,
                                    model_versions=MODEL_VERSIONS)


def assert_region_values(values: dict, expected: RegionValues, quantity: str) -> None:
    assert values[(quantity, "Mean")] == (pytest.approx(expected.mean), "ms")
    assert values[(quantity, "Median")] == (pytest.approx(expected.median), "ms")
    assert values[(quantity, "Standard Deviation")] == (pytest.approx(expected.sd), "ms")
    assert values[("Area", None)] == (pytest.approx(expected.area_mm2), "mm2")


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
        assert_region_values(values, analysis.myocardium_values, quantity)
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
