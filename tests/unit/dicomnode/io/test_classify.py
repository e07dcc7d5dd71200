"""Series roles and expected counts from single instances as scanners write them (and real SEG/RTSTRUCT/ParaMap)."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.dataset import Dataset

from db.models import SeriesRole
from dicomnode.io.classify import classify, expected_instances, inversion_time_ms
from tests.dicom_builders import enhanced_mr, mr_image, parametric_map
from tests.shared_data import SHARED_DATA

SHARED = SHARED_DATA


def test_siemens_molli_raw_with_inversion_time() -> None:
    ds = mr_image(description="MOLLI 5(3)3 SAX mid", inversion_time_ms=1100.0)
    assert classify(ds) == SeriesRole.RAW_IR
    assert inversion_time_ms(ds) == 1100.0


def test_raw_series_whose_protocol_name_says_t1map_is_still_raw() -> None:
    # Protocol names are free text; the inversion time and ORIGINAL image type win.
    assert classify(mr_image(description="T1map_long_MOLLI", inversion_time_ms=180.0)) == SeriesRole.RAW_IR
    assert classify(mr_image(description="SAX_T1MAP", inversion_time_ms=180.0)) == SeriesRole.RAW_IR


def test_philips_with_inversion_time_only_in_image_comments() -> None:
    ds = mr_image(
        description="sMOLLI SAX",
        manufacturer="Philips Medical Systems",
        image_type=("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
        image_comments="TIeff 180 ms",
    )
    assert classify(ds) == SeriesRole.RAW_IR
    assert inversion_time_ms(ds) == 180.0


def test_phase_series_of_inversion_recovery() -> None:
    siemens = mr_image(image_type=("ORIGINAL", "PRIMARY", "P", "ND"), inversion_time_ms=260.0)
    philips = mr_image(image_type=("ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"), image_comments="TIeff 260 ms")
    assert classify(siemens) == SeriesRole.RAW_IR_PHASE
    assert classify(philips) == SeriesRole.RAW_IR_PHASE


@pytest.mark.parametrize(
    ("description", "image_type", "role"),
    [
        ("MOLLI_SAX_T1MAP", ("DERIVED", "PRIMARY", "T1 MAP", "ND"), SeriesRole.T1_MAP),
        ("MOLLI_SAX_MOCO_T1", ("DERIVED", "PRIMARY", "M", "ND", "MOCO"), SeriesRole.T1_MAP),
        ("T1MAP", ("ORIGINAL", "PRIMARY", "M", "ND"), SeriesRole.T1_MAP),  # maps sometimes claim ORIGINAL
        ("T2map_flash_T2MAP", ("DERIVED", "PRIMARY", "T2 MAP", "ND"), SeriesRole.T2_MAP),
        ("MOLLI_SAX_MOCO", ("DERIVED", "PRIMARY", "M", "ND", "MOCO"), SeriesRole.MOCO),
        ("MOLLI_SAX_T1MAP_FITPARAMS", ("DERIVED", "PRIMARY", "M", "ND"), SeriesRole.FIT_QUALITY),
        ("SAX T1 R2 map", ("DERIVED", "PRIMARY", "M", "ND"), SeriesRole.FIT_QUALITY),
        ("localizer", ("ORIGINAL", "PRIMARY", "M", "ND"), SeriesRole.OTHER),
    ],
)
def test_derived_series_by_description_and_image_type(
    description: str, image_type: tuple, role: SeriesRole
) -> None:
    assert classify(mr_image(description=description, image_type=image_type)) == role


def test_t2_prep_raw_by_image_comments_sequence_name_or_description() -> None:
    by_comment = mr_image(description="SAX T2 mapping", image_comments="T2prep 25 ms")
    by_sequence = mr_image(description="SAX", sequence_name="*tfi2d1_T2prep")
    by_description = mr_image(description="T2map_flash_SAX")
    phase = mr_image(
        description="SAX", image_comments="T2prep 55 ms", image_type=("ORIGINAL", "PRIMARY", "P", "ND")
    )
    assert classify(by_comment) == SeriesRole.T2_PREP
    assert classify(by_sequence) == SeriesRole.T2_PREP
    assert classify(by_description) == SeriesRole.T2_PREP
    assert classify(phase) == SeriesRole.T2_PREP_PHASE


def test_enhanced_mr_inversion_recovery_and_t2_prep_frames() -> None:
    shmolli = enhanced_mr(description="ShMOLLI SAX")
    t2 = enhanced_mr(description="SAX mapping", inversion_times_ms=(0.0, 25.0, 55.0), t2_prep=True)
    assert classify(shmolli) == SeriesRole.RAW_IR
    assert inversion_time_ms(shmolli) == 100.0
    assert classify(t2) == SeriesRole.T2_PREP
    assert expected_instances(shmolli) == 1


def test_parametric_maps_by_real_world_value_mapping() -> None:
    assert classify(parametric_map(lut_label="T1")) == SeriesRole.T1_MAP
    assert classify(parametric_map(lut_label="T2")) == SeriesRole.T2_MAP
    assert classify(parametric_map(lut_label="R2")) == SeriesRole.FIT_QUALITY
    # pydicom-data's generic "feature_001" float map is nothing the mapping workflow knows.
    assert classify(pydicom.dcmread(SHARED / "paramap/parametric_map_float.dcm")) == SeriesRole.OTHER


@pytest.mark.parametrize("name", ["liver.dcm", "partial_overlaps.dcm", "sparse-labelmap-ppv5.dcm"])
def test_real_segmentations(name: str) -> None:
    ds = pydicom.dcmread(SHARED / "seg" / name)  # dcmqi (BSD-3-Clause)
    assert classify(ds) == SeriesRole.SEG
    assert expected_instances(ds) == 1


@pytest.mark.parametrize("name", ["invalid_reference_rt.dcm", "rt.dcm"])
def test_real_structure_sets(name: str) -> None:
    ds = pydicom.dcmread(SHARED / "rtstruct" / name)  # qurit/rt-utils (MIT)
    assert classify(ds) == SeriesRole.RTSTRUCT


def test_structured_report_is_other() -> None:
    assert classify(pydicom.dcmread(SHARED / "sr/dcmqi_tid1500_sr.dcm")) == SeriesRole.OTHER


def test_expected_instances_from_protocol_tags() -> None:
    assert expected_instances(mr_image(images_in_acquisition=8)) == 8
    cine = mr_image()
    cine.CardiacNumberOfImages = 11
    assert expected_instances(cine) == 11
    dynamic = mr_image()
    dynamic.NumberOfTemporalPositions = 7
    assert expected_instances(dynamic) == 7
    single = mr_image()
    single.CardiacNumberOfImages = 1  # not a cine: says nothing about the series
    assert expected_instances(single) is None
    assert expected_instances(mr_image()) is None


def test_a_map_does_not_count_its_series_by_the_acquisition_it_was_fitted_from() -> None:
    # A scanner's T1 map copies its source acquisition's counters: 8 IR images, but one map per slice.
    t1_map = mr_image(description="MOLLI 5(3)3 SAX_T1 MAP", image_type=("DERIVED", "PRIMARY", "T1 MAP", "ND"),
                      images_in_acquisition=8)
    t1_map.CardiacNumberOfImages = 8
    t1_map.SourceImageSequence = [Dataset() for _ in range(8)]
    assert classify(t1_map) == SeriesRole.T1_MAP
    assert expected_instances(t1_map, SeriesRole.T1_MAP) is None
    assert expected_instances(t1_map, SeriesRole.RAW_IR) == 8
    # A count below the images it was fitted from counts the map's series (one map per slice, three slices).
    t1_map.ImagesInAcquisition = 3
    assert expected_instances(t1_map, SeriesRole.T1_MAP) == 3
    # Without its sources a map's count is taken as it is.
    del t1_map.SourceImageSequence
    t1_map.ImagesInAcquisition = 8
    assert expected_instances(t1_map, SeriesRole.T1_MAP) == 8
