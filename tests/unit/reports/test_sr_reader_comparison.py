"""Reader comparison report: a phantom expert's contour scored against the phantom truth, on the node's MR map and
on the phantom's scanner maps; dciodvfy-clean and read back with the scores, the error mode and the contours."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.contour_fit import FittedContours, fit_contours
from inference.metrics import dice, mask_surface_distances_mm
from inference.myocardium_values import region_values
from inference.trainee_scoring import ErrorMode
from phantom.model import Vendor
from reports import codes
from reports.sr_measurement import polygon_area_mm2
from reports.sr_reader_comparison import build_reader_comparison_report
from tests.report_builders import (
    ALGORITHM_VERSION,
    dciodvfy_errors,
    groups_by_identifier,
    library_references,
    map_pixel_spacing_mm,
    measurement_values,
    node_map_slices,
    read_map_values_ms,
)


def _masks(seg_path: Path, source: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(myocardium, cavity) of a phantom reader SEG on ``source``."""
    seg = hd.seg.segread(seg_path)
    masks = seg.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1, 2])[0]
    return masks[..., 0].astype(bool), masks[..., 1].astype(bool)


def _scores(map_ms: np.ndarray, spacing: tuple[float, float], reader: tuple[np.ndarray, np.ndarray],
            reference: tuple[np.ndarray, np.ndarray]) -> tuple[dict[str, float], FittedContours]:
    hausdorff, mean_distance = mask_surface_distances_mm(reader[0], reference[0], spacing)
    reader_contours = fit_contours(reader[1], reader[0], spacing)
    reference_contours = fit_contours(reference[1], reference[0], spacing)

    def thickness_mm(contours: FittedContours) -> float:
        """Equivalent-circle wall thickness."""
        endo, epi = (polygon_area_mm2(points, spacing) for points in (contours.endo_px, contours.epi_px))
        return float(np.sqrt(epi / np.pi) - np.sqrt(endo / np.pi))

    scores = {
        "dice_myocardium": dice(reader[0], reference[0]),
        "hausdorff_mm": hausdorff,
        "mean_surface_distance_mm": mean_distance,
        "map_difference_ms": region_values(map_ms, reader[0], pixel_spacing_mm=spacing).mean
        - region_values(map_ms, reference[0], pixel_spacing_mm=spacing).mean,
        "wall_thickness_difference_mm": thickness_mm(reader_contours) - thickness_mm(reference_contours),
    }
    return scores, reader_contours


def _build(source: Dataset, scores: dict[str, float], contours: FittedContours, error_mode: str = "shifted"
           ) -> hd.sr.Comprehensive3DSR:
    return build_reader_comparison_report(
        source, reader="expert1", reference="truth", error_mode=error_mode,
        reader_endo_px=contours.endo_px, reader_epi_px=contours.epi_px,
        series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(), series_number=1010,
        algorithm_version=ALGORITHM_VERSION, **scores,
    )


def _check_round_trip(path: Path, source: Dataset, scores: dict[str, float], contours: FittedContours) -> None:
    read = hd.sr.srread(path)
    assert read.SeriesDescription == "myomap reader comparison"
    assert read.StudyInstanceUID == source.StudyInstanceUID
    groups = groups_by_identifier(read)
    assert sorted(groups) == ["expert1 vs truth endocardial contour", "expert1 vs truth epicardial contour",
                              "expert1 vs truth myocardium"]
    values = measurement_values(groups["expert1 vs truth myocardium"])
    assert values[(codes.DICE.meaning, None)] == (pytest.approx(scores["dice_myocardium"]), "1")
    assert values[(codes.HAUSDORFF_DISTANCE.meaning, None)] == (pytest.approx(scores["hausdorff_mm"]), "mm")
    assert values[(codes.MEAN_SURFACE_DISTANCE.meaning, None)] == (
        pytest.approx(scores["mean_surface_distance_mm"]), "mm")
    assert values[(codes.MAP_DIFFERENCE.meaning, None)] == (pytest.approx(scores["map_difference_ms"]), "ms")
    assert values[(codes.WALL_THICKNESS_DIFFERENCE.meaning, None)] == (
        pytest.approx(scores["wall_thickness_difference_mm"]), "mm")
    mode = groups["expert1 vs truth myocardium"].get_qualitative_evaluations(name=codes.CONTOUR_ERROR_MODE)
    assert mode[0].value == codes.ERROR_MODES["shifted"]
    endo = groups["expert1 vs truth endocardial contour"].roi
    np.testing.assert_allclose(endo.value[:-1], contours.endo_px + 0.5, atol=1e-3)
    np.testing.assert_allclose(groups["expert1 vs truth epicardial contour"].roi.value[:-1], contours.epi_px + 0.5,
                               atol=1e-3)
    reference = endo.ContentSequence[0].ReferencedSOPSequence[0]
    assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == \
        (source.SOPClassUID, source.SOPInstanceUID)
    assert library_references(read) == [(source.SOPClassUID, source.SOPInstanceUID)]


@pytest.mark.slow
@pytest.mark.parametrize("vendor", [Vendor.SIEMENS, Vendor.ENHANCED], ids=lambda v: v.value)
def test_expert_against_truth_on_scanner_maps(vendor: Vendor, phantom_folders: dict[Vendor, Path],
                                              tmp_path: Path) -> None:
    folder = phantom_folders[vendor]
    source = pydicom.dcmread(next(folder.glob("mid/*_map/001.dcm")))
    spacing = map_pixel_spacing_mm(source)
    readers = folder / "mid" / "readers"
    scores, contours = _scores(read_map_values_ms(source), spacing, _masks(readers / "expert1_seg" / "001.dcm", source),
                               _masks(readers / "truth_seg" / "001.dcm", source))
    assert 0.5 < scores["dice_myocardium"] < 1.0
    report = _build(source, scores, contours)
    assert dciodvfy_errors(report, tmp_path / "reader.dcm") == []
    _check_round_trip(tmp_path / "reader.dcm", source, scores, contours)


def test_reader_on_the_node_map(tmp_path: Path) -> None:
    source, analysis = node_map_slices()[1]
    # The reader drew both borders 2 pixels to the right.
    reader_myocardium = np.roll(analysis.segmentation.myocardium_mask, 2, axis=1)
    cavity = np.roll(analysis.segmentation.cavity_mask, 2, axis=1)
    scores, contours = _scores(analysis.map_ms, analysis.pixel_spacing_mm, (reader_myocardium, cavity),
                               (analysis.segmentation.myocardium_mask, analysis.segmentation.cavity_mask))
    report = _build(source, scores, contours)
    assert dciodvfy_errors(report, tmp_path / "reader.dcm") == []
    _check_round_trip(tmp_path / "reader.dcm", source, scores, contours)


def test_rejects_unknown_error_modes_and_leaves_out_missing_scores(tmp_path: Path) -> None:
    source, analysis = node_map_slices()[1]
    scores = {"dice_myocardium": 0.8, "hausdorff_mm": 3.0, "mean_surface_distance_mm": 1.0,
              "map_difference_ms": 5.0, "wall_thickness_difference_mm": 0.2}
    with pytest.raises(ValueError, match="error_mode"):
        _build(source, scores, analysis.contours, error_mode="sloppy")
    report = _build(source, {**scores, "map_difference_ms": float("nan")}, analysis.contours, error_mode="good")
    assert dciodvfy_errors(report, tmp_path / "reader.dcm") == []
    groups = groups_by_identifier(hd.sr.srread(tmp_path / "reader.dcm"))
    values = measurement_values(groups["expert1 vs truth myocardium"])
    assert (codes.MAP_DIFFERENCE.meaning, None) not in values
    assert values[(codes.DICE.meaning, None)] == (pytest.approx(0.8), "1")
    with pytest.raises(ValueError, match="reader_endo_px"):
        build_reader_comparison_report(
            source, reader="r", reference="c", error_mode="good", reader_endo_px=np.zeros((2, 2)),
            reader_epi_px=analysis.contours.epi_px, series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(), series_number=1, algorithm_version="1", **scores)


def test_every_error_mode_has_a_code(tmp_path: Path) -> None:
    source, analysis = node_map_slices()[1]
    scores = {"dice_myocardium": 0.8, "hausdorff_mm": 3.0, "mean_surface_distance_mm": 1.0,
              "map_difference_ms": 5.0, "wall_thickness_difference_mm": 0.2}
    _build(source, scores, analysis.contours, error_mode=ErrorMode.PART_MISSED).save_as(
        tmp_path / "reader.dcm", enforce_file_format=True)
    group = groups_by_identifier(hd.sr.srread(tmp_path / "reader.dcm"))["expert1 vs truth myocardium"]
    assert group.get_qualitative_evaluations(name=codes.CONTOUR_ERROR_MODE)[0].value.value == "EM-PART-MISSED"
    assert set(codes.ERROR_MODES) == {mode.value for mode in ErrorMode}
    assert len({code.value for code in codes.ERROR_MODES.values()}) == len(ErrorMode)
    assert all(len(code.value) <= 16 and len(code.meaning) <= 64 for code in codes.ERROR_MODES.values())
