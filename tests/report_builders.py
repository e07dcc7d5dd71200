"""Analyses and map images for the report builders' tests, and readers of what the builders write.

The analyses are built from phantom truth (segmentation masks -> fitted contours, AHA segments, values and wall
thickness with the node's own functions; motion and quality results made directly), because the models are not part
of these tests. Used by the measurement report, SEG, reader comparison and console image tests.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage

from inference.aha import LEVEL_SEGMENTS, AhaLevel, aha_segments, rv_insertion_points, wall_thickness_mm
from inference.contour_fit import fit_contours
from inference.grids import mask_centre_px
from inference.mapping import MapKind
from inference.motion import MotionResult
from inference.myocardium_values import mid_wall_mask, region_values, segment_values
from inference.quality import QualityEstimate
from inference.segmentation import Segmentation
from inference.slice_analysis import SliceAnalysis
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from reports.map_mr import build_mr_map
from tests.dicom_builders import mr_image
from training.phantom_slices import study_cases

DCIODVFY = "/usr/bin/dciodvfy"
SEED = 4242
MOTION_THRESHOLD = 0.5
ALGORITHM_VERSION = "0.1.0"


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
    mid_wall = mid_wall_mask(myocardium, cavity, spacing)
    return SliceAnalysis(
        map_kind=MapKind(kind),
        level=level,
        pixel_spacing_mm=spacing,
        map_ms=values,
        segmentation=Segmentation(cavity, myocardium),
        contours=contours,
        lv_centre_px=centre,
        anterior_insertion_px=anterior,
        inferior_insertion_px=inferior,
        aha_segment_map=segments,
        myocardium_values=region_values(values, mid_wall, pixel_spacing_mm=spacing),
        segment_values=segment_values(values, segments, pixel_spacing_mm=spacing, within=mid_wall),
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


# --- reading a report back --------------------------------------------------------------------------------------------


def measurement_values(group: object) -> dict[tuple[str, str | None], tuple[float, str]]:
    """(concept meaning, derivation meaning) -> (value, UCUM unit) of a measurement group."""
    values = {}
    for measurement in group.get_measurements():
        derivation = measurement.derivation.meaning if measurement.derivation is not None else None
        values[(measurement.name.meaning, derivation)] = (float(measurement.value), measurement.unit.value)
    return values


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
