"""Image geometry transforms, label mapping and mask derivation."""

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomnode.io.contours import ContourFormatError, ContourSet, ImageGeometry, Structure, structure_label
from dicomnode.io.contours.model import derive_myocardium
from tests.shared_data import SHARED_DATA

OBLIQUE = (-0.104592, 0.346381, -0.932245, -0.733192, -0.660188, -0.163037)  # a Sunnybrook short axis


def test_from_dataset_reads_a_single_frame_mr_image():
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    geometry = ImageGeometry.from_dataset(ds)
    assert geometry.shape == (ds.Rows, ds.Columns)
    assert geometry.pixel_spacing_mm == tuple(float(v) for v in ds.PixelSpacing)
    assert geometry.image_position_patient_mm == tuple(float(v) for v in ds.ImagePositionPatient)
    assert geometry.sop_instance_uid == ds.SOPInstanceUID
    assert geometry.frame_of_reference_uid == ds.FrameOfReferenceUID
    assert geometry.slice_thickness_mm == float(ds.SliceThickness)
    del ds.ImageOrientationPatient
    with pytest.raises(ContourFormatError, match="ImageOrientationPatient"):
        ImageGeometry.from_dataset(ds)


def test_pixel_patient_round_trip_on_an_oblique_plane():
    geometry = ImageGeometry(256, 256, (1.2, 1.4), (176.1, 22.3, 138.0), OBLIQUE, "1.2.3", "1.2", 10.0)
    points_px = np.array([[0.0, 0.0], [10.5, 3.25], [255.0, 255.0]])
    points_mm = geometry.pixel_to_patient(points_px)
    np.testing.assert_allclose(points_mm[0], geometry.image_position_patient_mm)
    # One column step moves along the row direction by the column spacing.
    np.testing.assert_allclose(geometry.pixel_to_patient([[1.0, 0.0]])[0] - points_mm[0],
                               np.asarray(OBLIQUE[:3]) * 1.4, atol=1e-9)
    np.testing.assert_allclose(geometry.patient_to_pixel(points_mm), points_px, atol=1e-9)
    np.testing.assert_allclose(geometry.distance_from_plane_mm(points_mm), 0.0, atol=1e-9)
    assert geometry.contains_points(points_mm + 4.9 * geometry.normal)
    assert not geometry.contains_points(points_mm + 5.1 * geometry.normal)


def test_geometry_refuses_impossible_values():
    with pytest.raises(ValueError, match="pixel_spacing_mm must be positive"):
        ImageGeometry(8, 8, (0.0, 1.0), (0, 0, 0), (1, 0, 0, 0, 1, 0), "1", None)


@pytest.mark.parametrize(("label", "code", "expected"), [
    ("Myocardium", None, "myocardium"),
    ("LV myocardium", None, "myocardium"),
    ("MYO", None, "myocardium"),
    ("LV Endocardium", None, "cavity"),
    ("endocardium", None, "cavity"),
    ("LV blood pool", None, "cavity"),
    ("Left ventricle cavity", None, "cavity"),
    ("LV_Epicardium", None, "epicardium"),
    ("Segment 1", ("SCT", "74281007"), "myocardium"),
    ("Segment 2", ("sct", "87878005"), "cavity"),
    ("Segment 3", ("SCT", "49848007"), "myocardium"),
    ("Segment 4", ("SRT", "T-32620"), "myocardium"),
    ("Heart", ("SRT", "T-32000"), "Heart"),
    ("Liver", ("SCT", "10200004"), "Liver"),
    ("epicardial fat", None, "epicardial fat"),
])
def test_structure_labels(label, code, expected):
    assert structure_label(label, code) == expected


def test_myocardium_is_epicardium_minus_cavity_unless_drawn():
    epi = np.zeros((6, 6), dtype=bool)
    epi[1:5, 1:5] = True
    cavity = np.zeros_like(epi)
    cavity[2:4, 2:4] = True
    drawn = np.zeros_like(epi)
    derived = derive_myocardium({"epicardium": {"a": epi, "b": epi}, "cavity": {"a": cavity, "b": cavity},
                                 "myocardium": {"b": drawn}})
    assert int(derived["myocardium"]["a"].sum()) == 12
    assert derived["myocardium"]["b"] is drawn
    assert "myocardium" not in derive_myocardium({"cavity": {"a": cavity}})


def test_contour_sets_need_image_shapes():
    square = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 3.0]])
    with pytest.raises(ContourFormatError, match="no image shape"):
        ContourSet("r", {Structure.CAVITY.value: {"x": (square,)}}, "test").to_masks()
    with pytest.raises(ContourFormatError, match="N >= 3"):
        ContourSet("r", {"cavity": {"x": (square[:2],)}}, "test", {"x": (4, 4)}).to_masks()


def test_from_dataset_reads_an_enhanced_parametric_map():
    """Fixture: paramap/parametric_map_float.dcm from pydicom/pydicom-data (MIT), see shared/data/README.md."""
    ds = pydicom.dcmread(SHARED_DATA / "paramap" / "parametric_map_float.dcm")
    geometry = ImageGeometry.from_dataset(ds)
    frame = ds.PerFrameFunctionalGroupsSequence[0]
    shared = ds.SharedFunctionalGroupsSequence[0]
    position = frame.get("PlanePositionSequence") or shared.PlanePositionSequence
    assert geometry.image_position_patient_mm == tuple(float(v) for v in position[0].ImagePositionPatient)
    assert geometry.shape == (128, 128)
    assert np.isclose(np.linalg.norm(geometry.normal), 1.0)
