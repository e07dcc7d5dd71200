"""What viewers read from the node's coded objects: the SEG and both SRs name each structure with the same codes (read
back from the written files), the segments carry display colours, the Parametric Map says MR; all dciodvfy-clean.
The shared fixtures written by dcmqi and highdicom (../shared/data, BSD-3-Clause and MIT) pair a segment's type
and anatomic region with the SR's Finding and Finding Site the same way."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.mapping import MapKind
from reports import codes
from reports.map_parametric import build_parametric_map
from reports.seg_model import (
    CAVITY_LABEL,
    CAVITY_RGB,
    CONSENSUS_LABEL,
    MYOCARDIUM_LABEL,
    MYOCARDIUM_RGB,
    build_model_segmentation,
)
from reports.sr_measurement import build_measurement_report
from reports.sr_reader_comparison import build_reader_comparison_report
from tests.dicom_builders import mr_image
from tests.report_builders import ALGORITHM_VERSION, dciodvfy_errors, node_map_slices
from tests.shared_data import SHARED_DATA

Coded = tuple[str, str, str]  # (value, scheme, meaning)

FINDING = ("121071", "DCM")
FINDING_CATEGORY = ("276214006", "SCT")
FINDING_SITE = ("363698007", "SCT")
FINDING_SITE_SRT = ("G-C0E3", "SRT")  # dcmqi's legacy code of Finding Site
TRACKING_IDENTIFIER = ("112039", "DCM")
MEASUREMENT_GROUP = ("125007", "DCM")


def _coded(item: Dataset) -> Coded:
    return str(item.CodeValue), str(item.CodingSchemeDesignator), str(item.CodeMeaning)


def _segments(path: Path) -> dict[str, dict[str, Coded]]:
    """Segment label -> category, type and anatomic region, read from a written SEG file with pydicom."""
    seg = pydicom.dcmread(path)
    result = {}
    for item in seg.SegmentSequence:
        regions = item.get("AnatomicRegionSequence") or []
        result[str(item.SegmentLabel)] = {
            "category": _coded(item.SegmentedPropertyCategoryCodeSequence[0]),
            "type": _coded(item.SegmentedPropertyTypeCodeSequence[0]),
            "region": _coded(regions[0]) if regions else ("", "", ""),
        }
    return result


def _items(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _items(item.get("ContentSequence", []))


def _name(item: Dataset) -> tuple[str, str]:
    concept = item.ConceptNameCodeSequence[0]
    return str(concept.CodeValue), str(concept.CodingSchemeDesignator)


def _groups(path: Path) -> dict[str, dict[str, Coded]]:
    """Tracking identifier -> Finding Category, Finding and Finding Site of each measurement group of a written SR
    file, read with pydicom (not with the library that wrote it)."""
    report = pydicom.dcmread(path)
    result = {}
    for group in _items(report.ContentSequence):
        if group.ValueType != "CONTAINER" or _name(group) != MEASUREMENT_GROUP:
            continue
        children = list(group.get("ContentSequence", []))
        tracking = next(str(c.TextValue) for c in children if _name(c) == TRACKING_IDENTIFIER)
        coded = {_name(c): _coded(c.ConceptCodeSequence[0]) for c in children if c.ValueType == "CODE"}
        result[tracking] = {"category": coded.get(FINDING_CATEGORY, ("", "", "")),
                            "type": coded.get(FINDING, ("", "", "")),
                            "region": coded.get(FINDING_SITE, coded.get(FINDING_SITE_SRT, ("", "", "")))}
    return result


def _reader_comparison(source: Dataset, endo_px: np.ndarray, epi_px: np.ndarray) -> hd.sr.Comprehensive3DSR:
    return build_reader_comparison_report(
        source, reader="trainee1", reference="consensus", dice_myocardium=0.8, hausdorff_mm=4.0,
        mean_surface_distance_mm=1.1, map_difference_ms=12.0, wall_thickness_difference_mm=0.4, error_mode="shifted",
        reader_endo_px=endo_px, reader_epi_px=epi_px, series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(), series_number=1010, algorithm_version=ALGORITHM_VERSION,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SEG, measurement SR and reader-comparison SR of the same slices, written and checked by dciodvfy."""
    folder = tmp_path_factory.mktemp("coded")
    slices = node_map_slices(consensus_level="mid")
    source, analysis = slices[1]
    objects = {
        "seg": build_model_segmentation(slices, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                                        series_number=1004, algorithm_version=ALGORITHM_VERSION),
        "sr": build_measurement_report(slices, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                                       series_number=1003, algorithm_version=ALGORITHM_VERSION,
                                       model_versions={"segmentation": "1.0.0"}),
        "comparison": _reader_comparison(source, analysis.contours.endo_px, analysis.contours.epi_px),
    }
    paths = {}
    for name, dataset in objects.items():
        paths[name] = folder / f"{name}.dcm"
        assert dciodvfy_errors(dataset, paths[name]) == [], name
    return paths


@pytest.mark.slow
def test_seg_and_srs_code_each_structure_alike(written: dict[str, Path]) -> None:
    segments = _segments(written["seg"])
    report = _groups(written["sr"])
    comparison = _groups(written["comparison"])
    cavity, myocardium = segments[CAVITY_LABEL], segments[MYOCARDIUM_LABEL]
    assert segments[CONSENSUS_LABEL] == myocardium
    for level in ("1 (basal)", "2 (mid)", "3 (apical)"):
        assert report[f"slice {level} endocardial contour"] == cavity
        assert report[f"slice {level} myocardium"] == myocardium
    assert comparison["trainee1 vs consensus endocardial contour"] == cavity
    assert comparison["trainee1 vs consensus myocardium"] == myocardium
    assert comparison["trainee1 vs consensus epicardial contour"] == report["slice 2 (mid) epicardial contour"]
    # An AHA segment is myocardium whose Finding Site is the segment itself.
    segment_group = report["slice 2 (mid) AHA segment 8"]
    assert (segment_group["category"], segment_group["type"]) == (myocardium["category"], myocardium["type"])
    assert segment_group["region"][:2] == (codes.AHA_SEGMENTS[8].value, "SCT")
    # The blood pool is not the whole ventricle, and the myocardium is the left ventricle's.
    assert cavity["type"] != report["slice 2 (mid) epicardial contour"]["type"]
    assert cavity == {"category": ("85756007", "SCT", "Tissue"), "type": ("87612001", "SCT", "Blood"),
                      "region": ("87878005", "SCT", "Left ventricle")}
    assert myocardium["type"] == ("49848007", "SCT", "Left Ventricle Myocardium")
    assert myocardium["region"] == cavity["region"]


@pytest.mark.slow
def test_only_the_chosen_anatomy_codes_are_written(written: dict[str, Path]) -> None:
    """Every anatomy concept in the three objects comes from reports.codes (no second myocardium code)."""
    chosen = {(c.value, c.scheme_designator, c.meaning) for structure in (codes.LV_BLOOD_POOL, codes.LV_MYOCARDIUM,
                                                                          codes.LV_WHOLE)
              for c in (structure.category, structure.property_type, structure.region)}
    chosen |= {(c.value, c.scheme_designator, c.meaning) for c in codes.AHA_SEGMENTS.values()}
    written_codes = {value for path in written.values()
                     for tables in (_segments(path) if path.stem == "seg" else _groups(path)).values()
                     for value in tables.values() if value[0]}
    assert written_codes <= chosen
    assert not any(value == "74281007" for value, _, _ in written_codes)


@pytest.mark.slow
def test_segments_carry_their_display_colour(written: dict[str, Path]) -> None:
    seg = pydicom.dcmread(written["seg"])
    colours = {}
    for item in seg.SegmentSequence:
        assert "RecommendedDisplayCIELabValue" in item, item.SegmentLabel
        colours[str(item.SegmentLabel)] = hd.color.CIELabColor.from_dicom_value(
            tuple(int(v) for v in item.RecommendedDisplayCIELabValue)).to_rgb()
    assert len(set(colours.values())) == len(colours)
    for label, rgb in ((CAVITY_LABEL, CAVITY_RGB), (MYOCARDIUM_LABEL, MYOCARDIUM_RGB)):
        assert np.abs(np.subtract(colours[label], rgb)).max() <= 2, label


def test_the_shared_fixtures_pair_segment_and_finding_codes_as_we_do() -> None:
    """dcmqi's SR codes its group with the Finding = its SEG's property type and Finding Site = the anatomic region."""
    theirs_seg = _segments(SHARED_DATA / "seg" / "dcmqi_sr_example_seg.dcm")
    theirs_sr = _groups(SHARED_DATA / "sr" / "dcmqi_tid1500_sr.dcm")
    (segment,) = theirs_seg.values()
    (group,) = theirs_sr.values()
    assert group["type"] == segment["type"] and group["region"] == segment["region"]
    # The other tools' SEGs carry a display colour on (nearly) every segment.
    for name in ("liver.dcm", "partial_overlaps.dcm", "dcmqi_sr_example_seg.dcm"):
        assert all("RecommendedDisplayCIELabValue" in item
                   for item in pydicom.dcmread(SHARED_DATA / "seg" / name).SegmentSequence)


def test_parametric_map_says_mr_and_stays_valid(tmp_path: Path) -> None:
    source = mr_image(rows=24, columns=20)
    source.PixelSpacing = [1.4, 1.4]
    source.ImageOrientationPatient = [0.6, 0.8, 0.0, -0.48, 0.36, -0.8]
    source.ImagePositionPatient = [-110.0, -80.0, 20.0]
    source.SliceThickness = 8
    source.MagneticFieldStrength = 1.5
    map_ms = np.random.default_rng(3).uniform(800.0, 1300.0, (24, 20))
    parametric_map = build_parametric_map(map_ms, [source], MapKind.T1, series_instance_uid=generate_uid(),
                                          sop_instance_uid=generate_uid(), series_number=1014)
    assert dciodvfy_errors(parametric_map, tmp_path / "pm.dcm") == []
    written = pydicom.dcmread(tmp_path / "pm.dcm")
    assert written.Modality == "MR"
    assert written.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    # pydicom-data's float map (a fixture written elsewhere) says "OT": the reason the builder sets it.
    assert pydicom.dcmread(SHARED_DATA / "paramap" / "parametric_map_float.dcm").Modality == "OT"
