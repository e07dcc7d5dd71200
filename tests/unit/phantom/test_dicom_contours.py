"""Readers' SEG and RTSTRUCT: round trips through highdicom and pydicom, geometry, dciodvfy."""

import highdicom as hd
import numpy as np
import pydicom
import pytest
from skimage.draw import polygon2mask

from phantom.anatomy import make_heart_geometry, make_slice_anatomy
from phantom.dicom_contours import (
    CAVITY_LABEL,
    ENDO_ROI_NAME,
    EPI_ROI_NAME,
    MYOCARDIUM_LABEL,
    ContourGeometryError,
    build_reader_rtstruct,
    build_reader_seg,
    cavity_mask,
    patient_to_pixel,
    pixel_to_patient,
    read_rtstruct_contours,
    read_seg_masks,
)
from phantom.dicom_images import ImagePart, SeriesInfo, build_classic_series
from phantom.dicom_maps import MapQuantity, build_classic_map, build_parametric_map
from phantom.model import FieldStrength, SliceLevel, Vendor
from phantom.readers import expert_contours, trainee_contours, truth_contour
from tests.unit.phantom.test_dicom_images import dciodvfy_errors, make_context, make_series
from tests.unit.phantom.test_dicom_maps import map_info


@pytest.fixture(scope="module")
def anatomy():
    rng = np.random.default_rng(41)
    return make_slice_anatomy(
        rng, SliceLevel.MID, FieldStrength.T1_5, matrix=(96, 112), pixel_spacing_mm=2.0,
        geometry=make_heart_geometry(rng),
    )


@pytest.fixture(scope="module")
def readers(anatomy):
    rng = np.random.default_rng(7)
    return [truth_contour(anatomy), *expert_contours(anatomy, rng, n_experts=3),
            *trainee_contours(anatomy, rng, n_trainees=3, skill=0.3)]


def map_for(anatomy, vendor):
    """A map on the anatomy's geometry, fitted from classic raw images with the same geometry."""
    context = make_context(vendor)
    geometry = anatomy.geometry
    acquired = make_series(rows=geometry.rows, columns=geometry.columns)
    raw_info = SeriesInfo(context.uids.uid("raw"), 2, "MOLLI", "MOLLI", 100.0)
    uids = [context.uids.uid("raw", i) for i in range(acquired.magnitude.shape[0])]
    sources = build_classic_series(acquired, geometry, context, raw_info, ImagePart.MAGNITUDE, uids)
    values = anatomy.t1_ms.astype(np.float64)
    if vendor is Vendor.GE:
        return context, build_parametric_map(values, MapQuantity.T1, sources, geometry, context, map_info(context),
                                              context.uids.uid("map"))
    return context, build_classic_map(values, MapQuantity.T1, sources, context, map_info(context),
                                      context.uids.uid("map"))


def test_pixel_patient_round_trip(anatomy):
    points = np.array([[0.0, 0.0], [10.5, 3.25], [95.0, 80.0]])
    patient = pixel_to_patient(points, anatomy.geometry)
    np.testing.assert_allclose(patient[0], anatomy.geometry.image_position_patient_mm)
    np.testing.assert_allclose(patient_to_pixel(patient, anatomy.geometry), points, atol=1e-9)
    spacing = anatomy.geometry.pixel_spacing_mm[1]
    assert np.linalg.norm(pixel_to_patient(np.array([[1.0, 0.0]]), anatomy.geometry)[0] - patient[0]) == \
        pytest.approx(spacing)


def test_cavity_is_inside_endo_and_disjoint_from_myocardium(anatomy):
    cavity = cavity_mask(anatomy.endo_contour_px, anatomy.myocardium_mask)
    assert not np.any(cavity & anatomy.myocardium_mask)
    inside = polygon2mask(anatomy.label_map.shape, anatomy.endo_contour_px[:, ::-1])
    assert cavity.sum() == (inside & ~anatomy.myocardium_mask).sum() > 100
    with pytest.raises(ContourGeometryError):
        cavity_mask(np.zeros((2, 2)), anatomy.myocardium_mask)


@pytest.mark.parametrize("vendor", [Vendor.SIEMENS, Vendor.GE])
def test_seg_round_trips_through_highdicom(tmp_path, anatomy, readers, vendor):
    context, map_ds = map_for(anatomy, vendor)
    for index, reader in enumerate(readers):
        info = SeriesInfo(context.uids.uid("seg", reader.reader), 100 + index, f"SEG {reader.reader} mid",
                          "contours", 3600.0)
        seg = build_reader_seg(reader, map_ds, context, info, context.uids.uid("seg-sop", reader.reader))
        path = tmp_path / f"{reader.reader}.dcm"
        seg.save_as(path)
        if index < 2:
            assert dciodvfy_errors(path) == []
        read = hd.seg.segread(path)
        assert str(read.ContentCreatorName) == reader.reader
        assert reader.reader in read.SeriesDescription
        pixels = read.get_pixels_by_source_instance(
            source_sop_instance_uids=[map_ds.SOPInstanceUID], segment_numbers=[1, 2], combine_segments=False
        )[0]
        np.testing.assert_array_equal(pixels[..., 0].astype(bool), reader.myocardium_mask)
        np.testing.assert_array_equal(pixels[..., 1].astype(bool),
                                      cavity_mask(reader.endo_contour_px, reader.myocardium_mask))
        labels = [segment.SegmentLabel for segment in read.SegmentSequence]
        assert labels == [MYOCARDIUM_LABEL, CAVITY_LABEL]
        masks = read_seg_masks(pydicom.dcmread(path))
        np.testing.assert_array_equal(masks[MYOCARDIUM_LABEL], reader.myocardium_mask)


def test_seg_refuses_mask_of_other_shape(anatomy, readers):
    context, map_ds = map_for(anatomy, Vendor.SIEMENS)
    reader = readers[0]
    small = type(reader)(reader.reader, reader.role, reader.endo_contour_px, reader.epi_contour_px,
                         reader.myocardium_mask[:-1])
    with pytest.raises(ContourGeometryError, match="differs from the map"):
        build_reader_seg(small, map_ds, context, SeriesInfo("1.2.3", 1, "x", "x", 0.0), "1.2.3.4")


@pytest.mark.parametrize("vendor", [Vendor.PHILIPS, Vendor.GE])
def test_rtstruct_points_map_back_to_the_contours(tmp_path, anatomy, readers, vendor):
    context, map_ds = map_for(anatomy, vendor)
    for index, reader in enumerate(readers[:3]):
        info = SeriesInfo(context.uids.uid("rt", reader.reader), 200 + index, f"RTSTRUCT {reader.reader} mid",
                          "contours", 3600.0)
        rtstruct = build_reader_rtstruct(reader, map_ds, anatomy.geometry, context, info,
                                         context.uids.uid("rt-sop", reader.reader))
        path = tmp_path / f"{reader.reader}.dcm"
        rtstruct.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        read = pydicom.dcmread(path)
        assert read.StructureSetLabel == reader.reader and str(read.OperatorsName) == reader.reader
        contour_image = read.ROIContourSequence[0].ContourSequence[0].ContourImageSequence[0]
        assert contour_image.ReferencedSOPInstanceUID == map_ds.SOPInstanceUID
        assert read.ROIContourSequence[0].ContourSequence[0].ContourGeometricType == "CLOSED_PLANAR"
        contours = read_rtstruct_contours(read, anatomy.geometry)
        assert np.abs(contours[ENDO_ROI_NAME] - reader.endo_contour_px).max() < 0.01
        assert np.abs(contours[EPI_ROI_NAME] - reader.epi_contour_px).max() < 0.01
