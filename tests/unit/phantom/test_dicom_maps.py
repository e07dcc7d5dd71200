"""The scanner's map products: vendor encodings, Parametric Maps, fit quality, rigid motion correction."""

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from phantom.dicom_images import ImagePart, SeriesInfo, build_enhanced_series
from phantom.dicom_maps import (
    MapQuantity,
    build_classic_map,
    build_parametric_map,
    encode_uint16,
    rigid_correct,
)
from phantom.model import FrameMotion, SliceGeometry, SliceLevel, Vendor
from phantom.motion import STILL, displacement_field
from tests.unit.phantom.test_dicom_images import GEOMETRY, classic, dciodvfy_errors, make_context, make_series


def t1_map(seed=0):
    rng = np.random.default_rng(seed)
    values = rng.uniform(900.0, 1900.0, (GEOMETRY.rows, GEOMETRY.columns))
    values[:3] = np.nan  # background: not fitted
    return values


def map_info(context, role="map"):
    return SeriesInfo(context.uids.uid("series", role), 4, "MOLLI_5(3)3_SAX_MID_T1MAP", "MOLLI", 160.0)


def test_encode_uint16_rounds_clips_and_zeroes_nan():
    stored = encode_uint16(np.array([np.nan, -3.0, 10.4, 1e9]), 1.0)
    assert stored.tolist() == [0, 0, 10, 65535]


def test_siemens_map_is_uint16_ms_without_rescale(tmp_path):
    _, sources = classic(Vendor.SIEMENS)
    context = make_context(Vendor.SIEMENS)
    values = t1_map()
    ds = build_classic_map(values, MapQuantity.T1, sources, context, map_info(context), context.uids.uid("m"))
    path = tmp_path / "map.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    assert list(read.ImageType) == ["DERIVED", "PRIMARY", "T1 MAP", "ND"]
    assert "RescaleSlope" not in read
    assert read.SeriesDescription.endswith("T1MAP")
    np.testing.assert_array_equal(read.pixel_array[3:], np.rint(values[3:]))
    assert np.all(read.pixel_array[:3] == 0)
    assert [item.ReferencedSOPInstanceUID for item in read.SourceImageSequence] == [s.SOPInstanceUID for s in sources]


def test_philips_map_rescales_to_ms_and_is_original(tmp_path):
    _, sources = classic(Vendor.PHILIPS)
    context = make_context(Vendor.PHILIPS)
    values = t1_map()
    ds = build_classic_map(values, MapQuantity.T1, sources, context, map_info(context), context.uids.uid("m"))
    path = tmp_path / "map.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    assert read.ImageType[0] == "ORIGINAL" and float(read.RescaleSlope) == 0.5
    ms = read.pixel_array * float(read.RescaleSlope) + float(read.RescaleIntercept)
    np.testing.assert_allclose(ms[3:], values[3:], atol=0.25 + 1e-9)


@pytest.mark.parametrize(("vendor", "scale", "slope"), [(Vendor.SIEMENS, 4000, None), (Vendor.PHILIPS, 1000, 0.001)])
def test_classic_fit_quality_scaling(tmp_path, vendor, scale, slope):
    _, sources = classic(vendor)
    context = make_context(vendor)
    r2 = np.random.default_rng(1).uniform(0.0, 1.0, (GEOMETRY.rows, GEOMETRY.columns))
    ds = build_classic_map(r2, MapQuantity.R2, sources, context, map_info(context, "r2"), context.uids.uid("r"))
    path = tmp_path / "r2.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    np.testing.assert_array_equal(read.pixel_array, np.rint(r2 * scale))
    assert (float(read.RescaleSlope) if "RescaleSlope" in read else None) == slope


def test_classic_map_refuses_parametric_map_vendor():
    _, sources = classic(Vendor.GE)
    context = make_context(Vendor.GE)
    with pytest.raises(ValueError, match="Parametric Maps"):
        build_classic_map(t1_map(), MapQuantity.T1, sources, context, map_info(context), context.uids.uid("m"))


@pytest.mark.parametrize("vendor", [Vendor.GE, Vendor.ENHANCED])
@pytest.mark.parametrize("quantity", [MapQuantity.T1, MapQuantity.R2])
def test_parametric_map_float_values_and_dciodvfy(tmp_path, vendor, quantity):
    context = make_context(vendor)
    if vendor is Vendor.ENHANCED:
        info = SeriesInfo(context.uids.uid("raw"), 3, "MOLLI", "MOLLI", 120.0)
        sources = [build_enhanced_series(make_series(), GEOMETRY, context, info, ImagePart.MAGNITUDE,
                                         context.uids.uid("raw-sop"))]
    else:
        _, sources = classic(vendor)
    values = t1_map() if quantity is MapQuantity.T1 else np.random.default_rng(2).uniform(0, 1, (24, 32))
    ds = build_parametric_map(values, quantity, sources, GEOMETRY, context, map_info(context), context.uids.uid("p"))
    path = tmp_path / "pm.dcm"
    ds.save_as(path)
    assert dciodvfy_errors(path) == []
    read = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(path))
    pixels = read.pixel_array.reshape(GEOMETRY.rows, GEOMETRY.columns)
    np.testing.assert_allclose(pixels, np.nan_to_num(values.astype(np.float32)), rtol=1e-6)
    mapping = read.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0].CodeValue
    assert unit == ("ms" if quantity is MapQuantity.T1 else "1")
    referenced = {item.ReferencedSOPInstanceUID for item in read.SourceImageSequence}
    assert referenced == {s.SOPInstanceUID for s in sources}


def test_rigid_correct_undoes_the_simulated_rigid_motion():
    geometry = SliceGeometry(96, 112, (1.6, 1.6), 8.0, (1, 0, 0, 0, 1, 0), (0, 0, 0), 0.0, SliceLevel.MID)
    y, x = np.mgrid[0:96, 0:112]
    still = np.exp(-(((x - 60) / 11.0) ** 2 + ((y - 44) / 7.0) ** 2))
    motion = FrameMotion(translation_mm=(3.0, -7.0), rotation_deg=4.0, deformation_mm=0.0)
    centre = (55.0, 50.0)
    dx, dy = displacement_field(motion, geometry, centre_px=centre)
    moved = ndimage.map_coordinates(still, [y - dy, x - dx], order=1)  # as phantom.acquisition forms it
    corrected = rigid_correct(np.stack([still, moved]), (STILL, motion), geometry.pixel_spacing_mm, centre)
    assert np.abs(moved - still).max() > 0.4
    assert np.abs(corrected[1] - still).max() < 0.03
    np.testing.assert_array_equal(corrected[0], still)


def test_rigid_correct_needs_one_motion_per_frame():
    with pytest.raises(ValueError, match="one motion per frame"):
        rigid_correct(np.zeros((2, 4, 4)), (STILL,), (1.0, 1.0), (2.0, 2.0))
