"""Raw magnitude and phase series: pixel encodings, vendor tags, Enhanced MR frames, dciodvfy."""

import math
import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from phantom.dicom_images import (
    ImagePart,
    PixelEncodingError,
    SeriesInfo,
    build_classic_series,
    build_enhanced_series,
    decode_phase,
    encode_magnitude,
    encode_phase,
)
from phantom.identity import StudyContext, UidFactory, make_patient
from phantom.model import AcquiredSeries, FieldStrength, SequenceKind, SliceGeometry, SliceLevel, Vendor
from phantom.motion import STILL
from phantom.vendors import flavour_for

# MOLLI 5(3)3 in acquisition order: the second set's images interleave with the first set's in TI.
MOLLI_TIS_MS = np.array([110.0, 1050.0, 1990.0, 2930.0, 3870.0, 190.0, 1130.0, 2070.0])
T2_PREP_MS = np.array([0.0, 25.0, 55.0])


def dciodvfy_errors(path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def make_series(kind=SequenceKind.MOLLI_533, rows=24, columns=32, seed=0):
    rng = np.random.default_rng(seed)
    times = T2_PREP_MS if kind is SequenceKind.T2PREP else MOLLI_TIS_MS
    n = times.size
    return AcquiredSeries(
        sequence=kind,
        magnitude=rng.uniform(0.0, 300.0, (n, rows, columns)).astype(np.float32),
        phase_rad=rng.uniform(-math.pi, math.pi, (n, rows, columns)).astype(np.float32),
        inversion_times_ms=None if kind is SequenceKind.T2PREP else times,
        t2_prep_ms=times if kind is SequenceKind.T2PREP else None,
        trigger_times_ms=np.full(n, 412.0),
        acquisition_times_s=np.arange(n) * 0.95,
        rr_ms=950.0,
        flip_angle_deg=35.0,
        echo_time_ms=1.12,
        repetition_time_ms=2.7,
        frame_motion=(STILL,) * n,
        motion_labels={},
        noise_sigma=1.0,
    )


GEOMETRY = SliceGeometry(
    rows=24,
    columns=32,
    pixel_spacing_mm=(1.5, 1.5),
    slice_thickness_mm=8.0,
    image_orientation_patient=(0.6, 0.8, 0.0, 0.0, 0.0, -1.0),
    image_position_patient_mm=(-40.0, -60.0, 25.0),
    slice_location_mm=12.5,
    level=SliceLevel.MID,
)


def make_context(vendor, seed=3):
    uids = UidFactory(seed, 0)
    return StudyContext(
        patient=make_patient(np.random.default_rng(seed), 0),
        study_instance_uid=uids.uid("study"),
        frame_of_reference_uid=uids.uid("for"),
        flavour=flavour_for(vendor),
        field=FieldStrength.T3,
        device_serial_number="40123",
        uids=uids,
    )


def classic(vendor, kind=SequenceKind.MOLLI_533, part=ImagePart.MAGNITUDE):
    context = make_context(vendor)
    acquired = make_series(kind)
    info = SeriesInfo(context.uids.uid("series", part.value), 3, "MOLLI_5(3)3_SAX_MID", "MOLLI", 120.0)
    uids = [context.uids.uid("sop", part.value, i) for i in range(acquired.magnitude.shape[0])]
    return acquired, build_classic_series(acquired, GEOMETRY, context, info, part, uids)


def test_magnitude_uses_full_range_with_one_scale_per_series():
    magnitude = np.array([[[0.0, 10.0]], [[20.0, 40.0]]])
    stored = encode_magnitude(magnitude)
    assert stored.dtype == np.uint16
    assert stored.max() == 65535
    np.testing.assert_allclose(stored.astype(float) / 65535 * 40.0, magnitude, atol=40.0 / 65535)


@pytest.mark.parametrize("bad", [np.array([[-1.0, 2.0]]), np.zeros((2, 2)), np.array([[np.nan, 1.0]])])
def test_magnitude_refuses_negative_nan_or_empty(bad):
    with pytest.raises(PixelEncodingError):
        encode_magnitude(bad)


def test_phase_round_trips_within_one_step():
    phase = np.linspace(-math.pi, math.pi, 1001, endpoint=False)
    stored = encode_phase(phase)
    assert stored.dtype == np.uint16 and stored.min() == 0 and stored.max() > 65400
    step = 2 * math.pi / 65536
    assert np.all(np.abs(decode_phase(stored) - phase) <= step + 1e-12)
    assert encode_phase(np.array([-math.pi]))[0] == 0


def test_siemens_magnitude_tags_and_order():
    acquired, datasets = classic(Vendor.SIEMENS)
    assert [int(ds.InstanceNumber) for ds in datasets] == list(range(1, 9))
    tis = [float(ds.InversionTime) for ds in datasets]
    np.testing.assert_allclose(tis, MOLLI_TIS_MS)
    assert tis != sorted(tis), "MOLLI interleaves its sets: TI order is not acquisition order"
    first = datasets[0]
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "M", "ND"]
    assert first.SequenceName.startswith("*tfi2d1_")
    assert first.Manufacturer == "SIEMENS"
    assert float(first.NominalInterval) == 950.0 and int(first.HeartRate) == 63
    assert int(first.CardiacNumberOfImages) == 8 and int(first.ImagesInAcquisition) == 8
    assert len({tuple(ds.ImagePositionPatient) for ds in datasets}) == 1
    assert "ImageComments" not in first
    assert first.PatientName.family_name == "PHANTOM" and first.PatientID.startswith("MYO")


def test_philips_ti_only_in_image_comments():
    _, datasets = classic(Vendor.PHILIPS)
    for ds, ti in zip(datasets, MOLLI_TIS_MS, strict=True):
        assert "InversionTime" in ds and ds.InversionTime in (None, "")
        assert ds.ImageComments == f"TIeff {ti:.0f} ms"


def test_phase_series_shares_description_and_tis_and_rescales_to_radians():
    acquired, magnitude = classic(Vendor.GE)
    _, phase = classic(Vendor.GE, part=ImagePart.PHASE)
    assert list(phase[0].ImageType) == ["ORIGINAL", "PRIMARY", "P", "ND"]
    assert phase[0].SeriesDescription == magnitude[0].SeriesDescription
    assert [ds.InversionTime for ds in phase] == [ds.InversionTime for ds in magnitude]
    radians = phase[2].pixel_array * float(phase[2].RescaleSlope) + float(phase[2].RescaleIntercept)
    assert np.all(np.abs(radians - acquired.phase_rad[2]) <= 2 * math.pi / 65536 + 1e-6)


def test_t2prep_time_in_image_comments_and_readout_te_kept():
    _, datasets = classic(Vendor.SIEMENS, kind=SequenceKind.T2PREP)
    assert [ds.ImageComments for ds in datasets] == ["T2prep 0 ms", "T2prep 25 ms", "T2prep 55 ms"]
    assert {float(ds.EchoTime) for ds in datasets} == {1.12}
    assert "InversionTime" not in datasets[0]


@pytest.mark.parametrize("vendor", [Vendor.SIEMENS, Vendor.PHILIPS, Vendor.GE])
@pytest.mark.parametrize("part", list(ImagePart))
def test_classic_series_pass_dciodvfy(tmp_path, vendor, part):
    _, datasets = classic(vendor, part=part)
    path = tmp_path / "image.dcm"
    datasets[0].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("kind", [SequenceKind.MOLLI_533, SequenceKind.T2PREP])
@pytest.mark.parametrize("part", list(ImagePart))
def test_enhanced_series_frames_and_dciodvfy(tmp_path, kind, part):
    context = make_context(Vendor.ENHANCED)
    acquired = make_series(kind)
    info = SeriesInfo(context.uids.uid("series"), 3, "MOLLI_5(3)3_SAX_MID", "MOLLI", 120.0)
    ds = build_enhanced_series(acquired, GEOMETRY, context, info, part, context.uids.uid("sop"))
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    n = acquired.magnitude.shape[0]
    assert read.SOPClassUID == pydicom.uid.EnhancedMRImageStorage and int(read.NumberOfFrames) == n
    frames = read.PerFrameFunctionalGroupsSequence
    assert [int(f.FrameContentSequence[0].TemporalPositionIndex) for f in frames] == list(range(1, n + 1))
    if kind is SequenceKind.MOLLI_533:
        tis = [float(f.MRModifierSequence[0].InversionTimes) for f in frames]  # one value per frame
        np.testing.assert_allclose(tis, MOLLI_TIS_MS)
    else:
        assert [f.FrameContentSequence[0].FrameComments for f in frames][1] == "T2prep 25 ms"
    delays = {float(f.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime) for f in frames}
    assert delays == {412.0}
    component = frames[0].MRImageFrameTypeSequence[0].ComplexImageComponent
    assert component == ("MAGNITUDE" if part is ImagePart.MAGNITUDE else "PHASE")
    assert read.pixel_array.shape == (n, GEOMETRY.rows, GEOMETRY.columns)


def test_uids_are_deterministic_and_distinct():
    assert UidFactory(1, 0).uid("a", 1) == UidFactory(1, 0).uid("a", 1)
    assert UidFactory(1, 0).uid("a", 1) != UidFactory(2, 0).uid("a", 1)
    assert UidFactory(1, 0).uid("a", 1) != UidFactory(1, 1).uid("a", 1)
    uid = UidFactory(1, 0).uid("study")
    assert uid.startswith("2.25.") and len(uid) <= 64
