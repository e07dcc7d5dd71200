"""RT Structure Set reader on real files written by others and on the phantom's reader RTSTRUCTs.

Fixtures (see shared/data/README.md): rtstruct/rt.dcm and rtstruct/invalid_reference_rt.dcm from qurit/rt-utils
``tests/mock_data/`` (MIT; the second written by MIM Software); rtstruct.dcm from pydicom's test files (MIT).
"""

import json

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from scipy import ndimage

from dicomnode.io.contours import (
    ContourFormatError,
    ImageGeometry,
    Structure,
    UnresolvedReferenceError,
    read_rtstruct,
    read_rtstruct_contours,
    read_seg,
)
from phantom.model import Vendor
from phantom.study import SequenceChoice, StudyRequest, generate_study, plan_study
from tests.shared_data import SHARED_DATA

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def contour_planes(ds):
    """Distinct z (mm) of the CLOSED_PLANAR contours and the UIDs they reference."""
    zs, uids = set(), set()
    for roi_contour in ds.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            if contour.ContourGeometricType == "CLOSED_PLANAR":
                zs.add(float(contour.ContourData[2]))
                uids.update(str(i.ReferencedSOPInstanceUID) for i in contour.get("ContourImageSequence", []))
    return sorted(zs), uids


def axial_geometries(ds, zs, *, size=512, spacing_mm=1.0):
    """Axial 1 mm images centred on the origin, one per plane, with fresh UIDs (the originals are not here)."""
    frame = str(ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)
    half = size * spacing_mm / 2.0
    return [ImageGeometry(size, size, (spacing_mm, spacing_mm), (-half, -half, z), AXIAL,
                          f"1.2.826.0.1.3680043.8.498.{index + 1}", frame, 2.0) for index, z in enumerate(zs)]


@pytest.mark.parametrize("name", ["rt.dcm", "invalid_reference_rt.dcm"])
def test_shared_rtstruct_without_its_images_names_the_missing_ones(name):
    ds = pydicom.dcmread(SHARED_DATA / "rtstruct" / name)
    _, uids = contour_planes(ds)
    with pytest.raises(UnresolvedReferenceError) as raised:
        read_rtstruct(ds, [])
    assert set(raised.value.missing_sop_instance_uids) == uids and uids
    assert raised.value.frame_of_reference_uid == ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    for uid in uids:
        assert uid in str(raised.value)
    with pytest.raises(UnresolvedReferenceError):
        read_rtstruct(ds, axial_geometries(ds, contour_planes(ds)[0]), match_by_plane=False)


def test_invalid_reference_rtstruct_gives_masks_when_images_are_matched_by_plane():
    ds = pydicom.dcmread(SHARED_DATA / "rtstruct" / "invalid_reference_rt.dcm")
    zs, _ = contour_planes(ds)
    geometries = axial_geometries(ds, zs)
    contours = read_rtstruct_contours(ds, geometries)
    masks = contours.to_masks()
    assert masks.reader == "RTstruct"  # StructureSetLabel: the file has no creator or operator name
    assert set(masks.masks) == {"ROI-1", "ROI-2", "ROI-3", "ROI-4"}
    n_points = sum(int(c.NumberOfContourPoints) for rc in ds.ROIContourSequence for c in rc.ContourSequence)
    assert sum(p.shape[0] for by in contours.contours.values() for ps in by.values() for p in ps) == n_points
    by_z = {g.sop_instance_uid: g.image_position_patient_mm[2] for g in geometries}
    for label, by_image in contours.contours.items():
        for uid, polygons in by_image.items():
            for polygon in polygons:
                back = next(g for g in geometries if g.sop_instance_uid == uid).pixel_to_patient(polygon)
                assert np.allclose(back[:, 2], by_z[uid])
            mask = masks.masks[label][uid]
            # 1 mm pixels: the mask area is the polygon area within the perimeter's half-pixel band.
            x, y = polygons[0][:, 0], polygons[0][:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            perimeter = np.hypot(np.diff(x, append=x[0]), np.diff(y, append=y[0])).sum()
            if len(polygons) == 1:
                assert abs(int(mask.sum()) - area) <= 0.5 * perimeter + 4


def test_pydicom_rtstruct_skips_points_and_places_contours_without_references_by_plane():
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)
    zs, uids = contour_planes(ds)
    assert uids == set()
    with pytest.raises(UnresolvedReferenceError, match="no known plane"):
        read_rtstruct(ds, axial_geometries(ds, [z + 50.0 for z in zs]))
    masks = read_rtstruct(ds, axial_geometries(ds, zs))
    assert masks.reader == "dmason"  # OperatorsName comes before StructureSetLabel
    assert set(masks.masks) == {"patient"}  # the two isocentres are POINT ROIs
    assert len(masks.masks["patient"]) == len(zs) == 3
    assert all(mask.any() for mask in masks.masks["patient"].values())


def test_a_non_rtstruct_is_refused():
    with pytest.raises(ContourFormatError, match="not an RT Structure Set"):
        read_rtstruct(pydicom.dcmread(get_testdata_file("MR_small.dcm")), [])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    request = StudyRequest(seed=7, n_slices=1, matrix=(80, 96), pixel_spacing_mm=2.2, vendor=Vendor.GE,
                           sequence=SequenceChoice.MOLLI, motion_rate=0.0)
    outcome = generate_study(plan_study(request, 0), tmp_path_factory.mktemp("phantom"))
    sidecar = json.loads((outcome.folder / "mid" / "sidecar.json").read_text())
    map_ds = pydicom.dcmread(outcome.folder / sidecar["sequences"][0]["series"]["map"]["paths"][0])
    return outcome.folder, sidecar, map_ds


def within_one_pixel_border(a, b):
    """Whether every pixel where a and b differ lies within one pixel of b's border."""
    border = ndimage.binary_dilation(b) & ~ndimage.binary_erosion(b)
    return not ((a ^ b) & ~ndimage.binary_dilation(border)).any()


def test_phantom_rtstructs_rasterise_to_the_seg_masks(study):
    folder, sidecar, map_ds = study
    geometry = ImageGeometry.from_dataset(map_ds)
    uid = str(map_ds.SOPInstanceUID)
    for entry in sidecar["readers"]:
        rt = pydicom.dcmread(folder / entry["rtstruct"]["paths"][0])
        masks = read_rtstruct(rt, [geometry])
        seg = read_seg(pydicom.dcmread(folder / entry["seg"]["paths"][0]), [geometry])
        assert masks.reader == entry["reader"] == seg.reader
        assert set(masks.masks) == {"cavity", "epicardium", "myocardium"}
        for structure in (Structure.MYOCARDIUM, Structure.CAVITY):
            ours, theirs = masks.mask(structure, uid), seg.mask(structure, uid)
            assert within_one_pixel_border(ours, theirs)
            assert (ours ^ theirs).sum() <= 0.01 * theirs.sum()
        assert int(masks.mask(Structure.MYOCARDIUM, uid).sum()) == pytest.approx(entry["myocardium_pixels"], abs=3)
        np.testing.assert_array_equal(
            masks.mask(Structure.MYOCARDIUM, uid),
            masks.mask(Structure.EPICARDIUM, uid) & ~masks.mask(Structure.CAVITY, uid),
        )


@pytest.mark.parametrize("bad_points", [None, [], [1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
def test_a_contour_with_bad_contour_data_is_a_format_error_naming_its_roi(bad_points):
    ds = pydicom.dcmread(SHARED_DATA / "rtstruct" / "rt.dcm")
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = bad_points
    with pytest.raises(ContourFormatError, match="ContourData") as raised:
        read_rtstruct(ds, axial_geometries(ds, contour_planes_of_good(ds)))
    roi_name = ds.StructureSetROISequence[0].ROIName
    assert roi_name in str(raised.value)


def test_a_contour_sequence_without_roi_number_is_a_format_error():
    ds = pydicom.dcmread(SHARED_DATA / "rtstruct" / "rt.dcm")
    del ds.ROIContourSequence[0].ReferencedROINumber
    with pytest.raises(ContourFormatError, match="ReferencedROINumber"):
        read_rtstruct(ds, [])


def contour_planes_of_good(ds):
    """z (mm) of the contours whose points are well formed."""
    zs = set()
    for roi_contour in ds.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            points = contour.get("ContourData") or []
            if len(points) >= 3:
                try:
                    zs.add(float(points[2]))
                except ValueError:
                    continue
    return sorted(zs)
