"""The models' segmentation as DICOM SEG: dciodvfy-clean, one frame per source image and segment, and read back by
highdicom with the analysis masks, on the node's MR maps (three slices, one with a consensus myocardium) and on the
phantom's scanner maps. The phantom's truth SEG and the highdicom/dcmqi SEG fixtures (../shared/data/seg, MIT and
BSD-3-Clause) are read the same way."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.slice_analysis import SliceAnalysis
from phantom.model import Vendor
from reports import codes
from reports.seg_model import CAVITY_LABEL, CONSENSUS_LABEL, MYOCARDIUM_LABEL, build_model_segmentation
from tests.report_builders import ALGORITHM_VERSION, dciodvfy_errors, node_map_slices, phantom_map_slice
from tests.shared_data import SHARED_DATA


def _build(slices: list[tuple[Dataset, SliceAnalysis]], **options: bool) -> hd.seg.Segmentation:
    return build_model_segmentation(slices, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
                                    series_number=1004, algorithm_version=ALGORITHM_VERSION, **options)


def _read_masks(seg: hd.seg.Segmentation, sources: list[Dataset]) -> np.ndarray:
    """(slices, rows, columns, segments) bool, in the order of ``sources``."""
    numbers = [int(item.SegmentNumber) for item in seg.SegmentSequence]
    return seg.get_pixels_by_source_instance([s.SOPInstanceUID for s in sources], segment_numbers=numbers) > 0


def summary(seg: hd.seg.Segmentation) -> list[tuple[str, str, str]]:
    """(label, property type code, algorithm type) of each segment, as a consumer reads them."""
    return [(item.SegmentLabel, item.SegmentedPropertyTypeCodeSequence[0].CodeValue, item.SegmentAlgorithmType)
            for item in seg.SegmentSequence]


@pytest.mark.slow
def test_node_maps_with_a_consensus_slice(tmp_path: Path) -> None:
    slices = node_map_slices(consensus_level="mid")
    seg = _build(slices)
    assert dciodvfy_errors(seg, tmp_path / "seg.dcm") == []
    read = hd.seg.segread(tmp_path / "seg.dcm")
    assert read.SegmentationType == "BINARY"
    assert read.SeriesDescription == "myomap segmentation"
    assert read.StudyInstanceUID == slices[0][0].StudyInstanceUID
    assert int(read.NumberOfFrames) == len(slices) * 3  # one frame per source image and segment
    assert summary(read) == [(CAVITY_LABEL, codes.BLOOD.value, "AUTOMATIC"),
                             (MYOCARDIUM_LABEL, codes.LEFT_VENTRICLE_MYOCARDIUM.value, "AUTOMATIC"),
                             (CONSENSUS_LABEL, codes.LEFT_VENTRICLE_MYOCARDIUM.value, "SEMIAUTOMATIC")]
    algorithm = read.SegmentSequence[1].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("myomap", ALGORITHM_VERSION)
    masks = _read_masks(read, [source for source, _ in slices])
    for index, (_, analysis) in enumerate(slices):
        np.testing.assert_array_equal(masks[index, ..., 0], analysis.segmentation.cavity_mask)
        np.testing.assert_array_equal(masks[index, ..., 1], analysis.segmentation.myocardium_mask)
        expected = analysis.consensus_mask if analysis.consensus_mask is not None else np.zeros_like(masks[0, ..., 2])
        np.testing.assert_array_equal(masks[index, ..., 2], expected)
    assert masks[1, ..., 2].any() and not masks[0, ..., 2].any()


def test_without_consensus_two_segments(tmp_path: Path) -> None:
    slices = node_map_slices(consensus_level="mid")
    read = _build(slices, include_consensus=False)
    assert [item.SegmentLabel for item in read.SegmentSequence] == [CAVITY_LABEL, MYOCARDIUM_LABEL]
    assert int(read.NumberOfFrames) == len(slices) * 2
    assert dciodvfy_errors(read, tmp_path / "seg.dcm") == []


@pytest.mark.slow
@pytest.mark.parametrize("vendor", list(Vendor), ids=lambda v: v.value)
def test_scanner_maps_as_sources(vendor: Vendor, phantom_folders: dict[Vendor, Path], tmp_path: Path) -> None:
    source, analysis = phantom_map_slice(phantom_folders[vendor])
    seg = _build([(source, analysis)])
    assert dciodvfy_errors(seg, tmp_path / "seg.dcm") == []
    read = hd.seg.segread(tmp_path / "seg.dcm")
    masks = _read_masks(read, [source])[0]
    np.testing.assert_array_equal(masks[..., 0], analysis.segmentation.cavity_mask)
    np.testing.assert_array_equal(masks[..., 1], analysis.segmentation.myocardium_mask)
    # Read the same way as the phantom's own truth SEG of that map: same geometry, same source reference.
    truth = hd.seg.segread(phantom_folders[vendor] / "mid" / "readers" / "truth_seg" / "001.dcm")
    for seg_ in (read, truth):
        assert seg_.get_source_image_uids()[0][2] == source.SOPInstanceUID
    assert read.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing == \
        truth.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing


def test_read_like_the_shared_fixtures() -> None:
    """The fixture SEGs and ours answer the same consumer questions through highdicom."""
    source, analysis = node_map_slices()[1]
    ours = hd.seg.Segmentation.from_dataset(_build([(source, analysis)]), copy=False)
    fixtures = [hd.seg.segread(SHARED_DATA / "seg" / name) for name in ("seg_image_ct_binary.dcm", "liver.dcm")]
    for seg in [ours, *fixtures]:
        assert seg.SegmentationType == "BINARY"
        assert summary(seg) and all(label and code for label, code, _ in summary(seg))
        source_uids = [uid for _, _, uid in seg.get_source_image_uids()]
        # dcmqi's liver.dcm does not say that spatial locations are preserved; ours does.
        pixels = seg.get_pixels_by_source_instance(source_uids[:1], segment_numbers=[1],
                                                   ignore_spatial_locations=seg is not ours)
        assert pixels.ndim == 4 and pixels.shape[0] == 1


def test_rejects_sources_from_two_series() -> None:
    slices = node_map_slices(with_t2=True)  # the T2 map is in its own series
    with pytest.raises(ValueError, match="one series"):
        _build(slices)
    with pytest.raises(ValueError, match="at least one"):
        _build([])
