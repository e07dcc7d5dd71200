"""DICOM-SEG reader on real files written by others and on the phantom's reader SEGs.

Fixtures (see shared/data/README.md): seg/liver.dcm, partial_overlaps.dcm, sparse-labelmap-ppv5.dcm and
dcmqi_sr_example_seg.dcm from QIICR/dcmqi ``data/`` (BSD-3-Clause); seg/seg_image_ct_binary*.dcm from
ImagingDataCommons/highdicom ``data/test_files/`` (MIT); liver_1frame.dcm from pydicom's test files (MIT).
"""

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy import ndimage

from dicomnode.io.contours import (
    ContourFormatError,
    ImageGeometry,
    Structure,
    UnknownReaderError,
    UnresolvedReferenceError,
    read_seg,
)
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from tests.shared_data import SHARED_DATA

SEG_FILES = sorted((SHARED_DATA / "seg").glob("*.dcm"))
# Files that name no reader (ContentCreatorName empty, no SeriesDescription): UnknownReaderError without reader=.
NAMELESS = {"seg_image_ct_binary.dcm", "seg_image_ct_binary_fractional.dcm"}


def frame_uids(ds):
    return {str(s.ReferencedSOPInstanceUID) for group in ds.PerFrameFunctionalGroupsSequence
            for d in group.DerivationImageSequence for s in d.SourceImageSequence}


@pytest.mark.parametrize("path", SEG_FILES, ids=lambda p: p.name)
def test_every_shared_seg_parses_to_masks_on_its_referenced_images(path):
    ds = pydicom.dcmread(path)
    if path.name in NAMELESS:
        with pytest.raises(UnknownReaderError, match="ContentCreatorName"):
            read_seg(ds)
        masks = read_seg(ds, reader="fixture reader")
    else:
        masks = read_seg(ds)
        assert masks.reader
    assert masks.source_format == f"DICOM-SEG {ds.SegmentationType}"
    labels = {str(item.SegmentLabel) for item in ds.SegmentSequence if int(item.SegmentNumber) != 0}
    assert set(masks.masks) == labels
    assert set(masks.sop_instance_uids) <= frame_uids(ds)
    for by_image in masks.masks.values():
        for mask in by_image.values():
            assert mask.dtype == bool and mask.shape == (ds.Rows, ds.Columns)
    assert sum(int(mask.sum()) for by_image in masks.masks.values() for mask in by_image.values()) > 0


def test_reader_names_come_from_the_files():
    assert read_seg(pydicom.dcmread(SHARED_DATA / "seg" / "dcmqi_sr_example_seg.dcm")).reader == "User2"
    assert read_seg(pydicom.dcmread(SHARED_DATA / "seg" / "sparse-labelmap-ppv5.dcm")).reader == "Doe John"


def test_multiframe_binary_frames_land_on_their_own_images():
    ds = pydicom.dcmread(SHARED_DATA / "seg" / "liver.dcm")
    liver = read_seg(ds).masks["Liver"]
    assert len(liver) == 3
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(liver[uid], ds.pixel_array[index].astype(bool))


def test_overlapping_segments_stay_separate():
    masks = read_seg(pydicom.dcmread(SHARED_DATA / "seg" / "partial_overlaps.dcm")).masks
    assert len(masks) == 5
    shared = set(masks["GREEN"]) & set(masks["PURPLE"])
    assert any((masks["GREEN"][uid] & masks["PURPLE"][uid]).any() for uid in shared)


def test_single_frame_seg_matches_the_first_frame_of_the_multiframe_one():
    single = read_seg(pydicom.dcmread(get_testdata_file("liver_1frame.dcm")), reader="r").masks["Liver"]
    multi = read_seg(pydicom.dcmread(SHARED_DATA / "seg" / "liver.dcm"), reader="r").masks["Liver"]
    assert len(single) == 1
    uid, mask = next(iter(single.items()))
    np.testing.assert_array_equal(mask, multi[uid])


def test_fractional_is_thresholded_at_half_the_maximum():
    ds = pydicom.dcmread(SHARED_DATA / "seg" / "seg_image_ct_binary_fractional.dcm")
    masks = read_seg(ds, reader="r").masks["first segment"]
    limit = 0.5 * float(ds.MaximumFractionalValue)
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(masks[uid], ds.pixel_array[index] >= limit)
    # Lowering every value below half the maximum empties the masks.
    ds.PixelData = (ds.pixel_array // 3).astype(np.uint8).tobytes()
    assert not any(mask.any() for mask in read_seg(ds, reader="r").masks["first segment"].values())


def test_labelmap_pixel_value_is_the_segment_number():
    ds = pydicom.dcmread(SHARED_DATA / "seg" / "sparse-labelmap-ppv5.dcm")
    liver = read_seg(ds).masks["Liver"]
    assert "Background" not in read_seg(ds).masks
    pixels = ds.pixel_array
    for index, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_array_equal(liver[uid], pixels[index] == 1)


def test_frames_referencing_unknown_images_raise_naming_them():
    ds = pydicom.dcmread(SHARED_DATA / "seg" / "liver.dcm")
    decoy = ImageGeometry(512, 512, (1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), "1.2.3.4", "1.2.3")
    with pytest.raises(UnresolvedReferenceError) as raised:
        read_seg(ds, [decoy])
    assert set(raised.value.missing_sop_instance_uids) == frame_uids(ds)
    assert str(ds.FrameOfReferenceUID) in str(raised.value)


def test_a_non_seg_is_refused():
    with pytest.raises(ContourFormatError, match="not a Segmentation"):
        read_seg(pydicom.dcmread(get_testdata_file("MR_small.dcm")))


@pytest.fixture(scope="module", params=[Vendor.SIEMENS, Vendor.ENHANCED], ids=lambda v: v.value)
def study(tmp_path_factory, request):
    vendor = request.param
    request = StudyRequest(seed=5, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=vendor,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path_factory.mktemp("phantom"))
    sidecar = json.loads((outcome.folder / "mid" / "sidecar.json").read_text())
    map_ds = pydicom.dcmread(outcome.folder / sidecar["sequences"][0]["series"]["map"]["paths"][0])
    return outcome.folder, sidecar, map_ds


def test_phantom_reader_segs_give_each_readers_masks(study):
    folder, sidecar, map_ds = study
    geometry = ImageGeometry.from_dataset(map_ds)
    truth = None
    for entry in sidecar["readers"]:
        masks = read_seg(pydicom.dcmread(folder / entry["seg"]["paths"][0]), [geometry])
        assert masks.reader == entry["reader"]
        myocardium = masks.mask(Structure.MYOCARDIUM, entry["map_sop_instance_uid"])
        cavity = masks.mask(Structure.CAVITY, entry["map_sop_instance_uid"])
        assert int(myocardium.sum()) == entry["myocardium_pixels"]
        assert cavity.any() and not (cavity & myocardium).any()
        # The cavity is enclosed by the myocardium: filling the myocardium's holes covers it.
        assert (ndimage.binary_fill_holes(myocardium) | ndimage.binary_dilation(myocardium))[cavity].all()
        if entry["role"] == "truth":
            truth = myocardium
        elif entry["role"] == "expert":
            assert 2 * (myocardium & truth).sum() / (myocardium.sum() + truth.sum()) > 0.75


def test_frames_without_uid_references_are_placed_by_position(study):
    folder, sidecar, map_ds = study
    ds = pydicom.dcmread(folder / sidecar["readers"][0]["seg"]["paths"][0])
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.DerivationImageSequence
    del ds.ReferencedSeriesSequence
    geometry = ImageGeometry.from_dataset(map_ds)
    normal_mm = geometry.normal * 30.0
    other = ImageGeometry(geometry.rows, geometry.columns, geometry.pixel_spacing_mm,
                          tuple(np.asarray(geometry.image_position_patient_mm) + normal_mm),
                          geometry.image_orientation_patient, "1.2.826.0.1.3680043.8.498.1",
                          geometry.frame_of_reference_uid, geometry.slice_thickness_mm)
    masks = read_seg(ds, [other, geometry])
    assert masks.sop_instance_uids == (str(map_ds.SOPInstanceUID),)
    assert int(masks.mask("myocardium", map_ds.SOPInstanceUID).sum()) == sidecar["readers"][0]["myocardium_pixels"]
    with pytest.raises(UnresolvedReferenceError, match="no source reference"):
        read_seg(ds, [other])
    with pytest.raises(UnresolvedReferenceError):
        read_seg(ds)  # nothing to match the positions against


def test_grid_mismatch_is_refused(study):
    folder, sidecar, map_ds = study
    ds = pydicom.dcmread(folder / sidecar["readers"][0]["seg"]["paths"][0])
    geometry = ImageGeometry.from_dataset(map_ds)
    smaller = ImageGeometry(geometry.rows - 1, geometry.columns, geometry.pixel_spacing_mm,
                            geometry.image_position_patient_mm, geometry.image_orientation_patient,
                            geometry.sop_instance_uid, geometry.frame_of_reference_uid)
    with pytest.raises(ContourFormatError, match="same grid"):
        read_seg(ds, [smaller])


@pytest.mark.parametrize("path", [*SEG_FILES, get_testdata_file("liver_1frame.dcm")],
                         ids=lambda p: str(p).rsplit("/", 1)[-1])
def test_masks_agree_with_highdicom_per_source_instance(path):
    """highdicom's reconstruction, where it accepts the file, as an independent check of the frame parsing."""
    ds = pydicom.dcmread(path)
    ours = read_seg(ds, reader="r").masks
    seg = hd.seg.Segmentation.from_dataset(ds, copy=True)
    uids = [uids[2] for uids in seg.get_source_image_uids()]
    numbers = [number for number in seg.segment_numbers if number != 0]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=numbers, ignore_spatial_locations=True)
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in ds.SegmentSequence}
    compared = 0
    for i, uid in enumerate(uids):
        for j, number in enumerate(numbers):
            theirs = pixels[i, ..., j] >= 0.5 if pixels.dtype.kind == "f" else pixels[i, ..., j] > 0
            mine = ours.get(labels[number], {}).get(uid)
            if mine is None:
                assert not theirs.any()  # an image without frames of this segment
            else:
                np.testing.assert_array_equal(mine, theirs)
                compared += 1
    assert compared == sum(len(by_image) for by_image in ours.values())
