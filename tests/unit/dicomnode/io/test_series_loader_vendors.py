"""Vendor conventions the loader meets in real data: mixed complex components in one series (GE private image type,
Philips M_FFE/P_FFE/R_FFE/I_FFE) and one raw series per inversion time (GE, Philips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode.io.series_loader import (
    GE_PRIVATE_CREATOR,
    SeriesLoadError,
    TimingKind,
    belongs_to_same_acquisition,
    complex_component,
    load_series,
    load_series_files,
    load_series_group,
    normalised_protocol,
)

STUDY_UID = generate_uid()
FRAME_OF_REFERENCE_UID = generate_uid()
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
GE_COMPONENT_VALUES = {"MAGNITUDE": 0, "PHASE": 1, "REAL": 2, "IMAGINARY": 3}


def _ge_image(
    series_uid: str,
    *,
    inversion_time_ms: float,
    component: str = "MAGNITUDE",
    value: int = 1000,
    series_number: int = 5,
    description: str = "MOLLI SAX Mid",
    protocol: str = "MOLLI SAX",
    position_z: float = 10.0,
    acquisition_time: str = "101500",
    private_creator: bool = True,
    private_vr: str = "SS",
) -> Dataset:
    """One GE raw image: ImageType silent, the component only in (0043,102F); non-magnitude pixels signed."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = FRAME_OF_REFERENCE_UID
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = protocol
    ds.SequenceName = "FIESTA-IR"
    ds.Modality = "MR"
    ds.NominalInterval = "1000"
    ds.AcquisitionDate = ds.SeriesDate = "20240301"
    ds.AcquisitionTime = ds.SeriesTime = acquisition_time
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.InversionTime = inversion_time_ms
    ds.ImagePositionPatient = [0.0, 0.0, position_z]
    ds.ImageOrientationPatient = ORIENTATION
    ds.PixelSpacing = [1.5, 1.5]
    if private_creator:
        ds.add_new((0x0043, 0x0010), "LO", GE_PRIVATE_CREATOR)
    code = GE_COMPONENT_VALUES[component]
    ds.add_new((0x0043, 0x102F), private_vr, str(code) if private_vr == "IS" else code)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 3, 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    signed = component != "MAGNITUDE"
    ds.PixelRepresentation = 1 if signed else 0
    pixels = np.full((3, 4), value, dtype="<i2" if signed else "<u2")
    if signed:
        pixels[0, 0] = -8101
    ds.PixelData = pixels.tobytes()
    return ds


def _ge_mixed_series(tis=(100.0, 180.0, 1100.0), **kwargs) -> list[Dataset]:
    series_uid = generate_uid()
    return [
        _ge_image(series_uid, inversion_time_ms=ti, component=component, value=int(ti), **kwargs)
        for ti in tis
        for component in ("PHASE", "MAGNITUDE", "REAL", "IMAGINARY")
    ]


def test_ge_mixed_series_keeps_only_magnitude_images() -> None:
    (stack,) = load_series(_ge_mixed_series(), TimingKind.INVERSION).slices
    assert stack.times_ms.tolist() == [100.0, 180.0, 1100.0]
    assert stack.images[:, 1, 1].tolist() == [100.0, 180.0, 1100.0]
    assert stack.images.min() >= 0  # the signed phase, real and imaginary images (-8101) are left out
    assert {complex_component(ds) for ds in stack.sources} == {"MAGNITUDE"}


@pytest.mark.parametrize("vr", ["SS", "US", "IS"])
def test_ge_private_image_type_is_read_whatever_its_vr(vr: str) -> None:
    for component, code in GE_COMPONENT_VALUES.items():
        if vr == "US" and code < 0:
            continue
        assert complex_component(_ge_image(generate_uid(), inversion_time_ms=100, component=component,
                                           private_vr=vr)) == component


def test_ge_private_image_type_without_private_creator_read_from_disk_as_bytes(tmp_path: Path) -> None:
    # Anonymisation removed (0043,0010); stored implicit VR, pydicom reads (0043,102F) as UN bytes.
    datasets = _ge_mixed_series(private_creator=False)
    paths = []
    for index, ds in enumerate(datasets):
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path = tmp_path / f"{index}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    read_back = pydicom.dcmread(paths[0])
    assert isinstance(read_back[0x0043, 0x102F].value, bytes)
    assert complex_component(read_back) == "PHASE"
    (stack,) = load_series_files(paths, TimingKind.INVERSION).slices
    assert stack.times_ms.tolist() == [100.0, 180.0, 1100.0]
    assert stack.images.min() >= 0


def test_ge_private_image_type_in_another_block_and_foreign_creators() -> None:
    moved = _ge_image(generate_uid(), inversion_time_ms=100, component="MAGNITUDE")
    del moved[0x0043, 0x0010], moved[0x0043, 0x102F]
    moved.add_new((0x0043, 0x0010), "LO", "SOME OTHER CREATOR")
    moved.add_new((0x0043, 0x102F), "SS", 1)  # another creator's element: not GE's image type
    moved.add_new((0x0043, 0x0011), "LO", GE_PRIVATE_CREATOR)
    moved.add_new((0x0043, 0x112F), "SS", 3)
    assert complex_component(moved) == "IMAGINARY"
    foreign = _ge_image(generate_uid(), inversion_time_ms=100, component="PHASE", private_creator=False)
    foreign.Manufacturer = "SIEMENS"  # no creator and not GE: (0043,102F) is not trusted, ImageType decides
    assert complex_component(foreign) == ""
    foreign.ImageType = ["ORIGINAL", "PRIMARY", "P", "ND"]
    assert complex_component(foreign) == "PHASE"


@pytest.mark.parametrize(
    ("image_type", "component", "expected"),
    [
        (("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"), None, "MAGNITUDE"),
        (("ORIGINAL", "PRIMARY", "R_FFE", "R", "FFE"), None, "REAL"),
        (("ORIGINAL", "PRIMARY", "I_FFE", "I", "FFE"), None, "IMAGINARY"),
        (("ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"), None, "PHASE"),
        (("ORIGINAL", "PRIMARY", "M_IR", "M", "IR"), None, "MAGNITUDE"),
        (("ORIGINAL", "PRIMARY", "M", "ND"), None, "MAGNITUDE"),
        (("ORIGINAL", "PRIMARY", "P", "ND"), None, "PHASE"),
        (("ORIGINAL", "PRIMARY", "OTHER"), None, ""),
        (("DERIVED", "PRIMARY", "T1 MAP", "ND"), None, ""),
        (("DERIVED", "PRIMARY", "OTHER", "R2"), None, ""),
        (("ORIGINAL", "PRIMARY", "OTHER"), "REAL", "REAL"),
        (("ORIGINAL", "PRIMARY", "M", "ND"), "PHASE", "PHASE"),  # any non-magnitude marker wins
        (("ORIGINAL", "PRIMARY", "OTHER"), "MIXED", ""),
    ],
)
def test_complex_component_from_image_type_and_complex_image_component(image_type, component, expected) -> None:
    ds = Dataset()
    ds.ImageType = list(image_type)
    if component is not None:
        ds.ComplexImageComponent = component
    assert complex_component(ds) == expected


def test_philips_mixed_series_keeps_only_m_ffe() -> None:
    series_uid = generate_uid()
    datasets = []
    for ti in (95.0, 180.0):
        for marker, value in (("M", 500), ("R", 7), ("I", 9), ("P", 11)):
            ds = _ge_image(series_uid, inversion_time_ms=ti, value=value + int(ti))
            del ds[0x0043, 0x0010], ds[0x0043, 0x102F]
            ds.Manufacturer = "Philips Medical Systems"
            ds.ImageType = ["ORIGINAL", "PRIMARY", f"{marker}_FFE", marker, "FFE"]
            datasets.append(ds)
    (stack,) = load_series(datasets, TimingKind.INVERSION).slices
    assert stack.images[:, 1, 1].tolist() == [595.0, 680.0]


def _per_ti_series(tis=(100.0, 180.0, 260.0, 1100.0), *, first_number: int = 7, mixed: bool = False,
                   positions=(10.0,), start_minute: int = 15) -> list[list[Dataset]]:
    """One GE series per TI: 1 magnitude image per slice, or 4 (magnitude, phase, real, imaginary)."""
    groups = []
    for index, ti in enumerate(tis):
        series_uid = generate_uid()
        components = ("MAGNITUDE", "PHASE", "REAL", "IMAGINARY") if mixed else ("MAGNITUDE",)
        groups.append([
            _ge_image(series_uid, inversion_time_ms=ti, component=component, value=int(ti),
                      series_number=first_number + index, description=f"MOLLI SAX Mid TI={ti:.0f}",
                      position_z=z, acquisition_time=f"10{start_minute:02d}{10 + index:02d}")
            for z in positions
            for component in components
        ])
    return groups


def test_per_ti_series_load_as_one_series() -> None:
    groups = _per_ti_series(mixed=True, positions=(10.0, 18.0))
    loaded = load_series_group(list(reversed(groups)), TimingKind.INVERSION)
    assert loaded.series_instance_uid == groups[0][0].SeriesInstanceUID  # lowest series number
    assert loaded.series_number == 7
    assert [stack.image_position_patient_mm[2] for stack in loaded.slices] == [10.0, 18.0]
    for stack in loaded.slices:
        assert stack.times_ms.tolist() == [100.0, 180.0, 260.0, 1100.0]
        assert stack.images[:, 0, 1].tolist() == [100.0, 180.0, 260.0, 1100.0]
        assert len({ds.SeriesInstanceUID for ds in stack.sources}) == 4


def test_one_series_group_equals_load_series() -> None:
    datasets = _ge_mixed_series()
    grouped = load_series_group([datasets], "inversion")
    single = load_series(datasets, "inversion")
    assert grouped.series_instance_uid == single.series_instance_uid
    np.testing.assert_array_equal(grouped.slices[0].images, single.slices[0].images)


def test_repeated_ti_across_series_is_a_reacquisition() -> None:
    groups = _per_ti_series(tis=(100.0, 180.0)) + _per_ti_series(tis=(100.0,), first_number=9)
    with pytest.raises(SeriesLoadError, match=r"inversion time 100 ms .* re-acquisition"):
        load_series_group(groups, TimingKind.INVERSION)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ds: setattr(ds, "StudyInstanceUID", "1.2.3"), "2 studies"),
        (lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3"), "frames of reference"),
        (lambda ds: setattr(ds, "ImagePositionPatient", [0.0, 0.0, 30.0]), "slice positions"),
        (lambda ds: setattr(ds, "ProtocolName", "T2 mapping SAX"), "ProtocolName"),
        (lambda ds: setattr(ds, "SeriesDescription", "ShMOLLI SAX Mid TI=1100"), "SeriesDescription"),
    ],
)
def test_series_that_do_not_belong_together_are_refused(change, message) -> None:
    groups = _per_ti_series()
    for ds in groups[-1]:
        change(ds)
    with pytest.raises(SeriesLoadError, match=message):
        load_series_group(groups, TimingKind.INVERSION)
    assert not belongs_to_same_acquisition(groups[0][0], groups[-1][0])


def test_empty_group_duplicate_series_and_phase_only_member_are_refused() -> None:
    groups = _per_ti_series(tis=(100.0, 180.0))
    with pytest.raises(SeriesLoadError, match="no series"):
        load_series_group([], TimingKind.INVERSION)
    with pytest.raises(SeriesLoadError, match="given twice"):
        load_series_group([groups[0], groups[0]], TimingKind.INVERSION)
    phase_only = [_ge_image(generate_uid(), inversion_time_ms=300.0, component="PHASE")]
    with pytest.raises(SeriesLoadError, match="no magnitude"):
        load_series_group([*groups, phase_only], TimingKind.INVERSION)


def test_protocol_names_compare_without_times_and_digits() -> None:
    assert normalised_protocol("MOLLI 5(3)3 SAX Mid TI=100") == normalised_protocol("MOLLI 5(3)3 SAX Mid TI 1100ms")
    assert normalised_protocol("T1map_MOLLI_TI180") == normalised_protocol("T1map_MOLLI_TI2100")
    assert normalised_protocol("ShMOLLI SAX") != normalised_protocol("MOLLI SAX")


def test_belongs_to_same_acquisition() -> None:
    first, second, third, _ = (group[0] for group in _per_ti_series())
    assert belongs_to_same_acquisition(first, second)
    assert belongs_to_same_acquisition(second, third)
    assert belongs_to_same_acquisition(first, first)
    (again,) = (group[0] for group in _per_ti_series(tis=(100.0,), first_number=11))
    assert not belongs_to_same_acquisition(first, again)  # same TI: a re-acquisition
    (far,) = (group[0] for group in _per_ti_series(tis=(300.0,), first_number=40))
    assert not belongs_to_same_acquisition(first, far)  # series numbers 33 apart
    (late,) = (group[0] for group in _per_ti_series(tis=(300.0,), first_number=9, start_minute=30))
    assert not belongs_to_same_acquisition(first, late)  # 15 minutes later
    (other_slice,) = (group[0] for group in _per_ti_series(tis=(300.0,), positions=(40.0,)))
    assert not belongs_to_same_acquisition(first, other_slice)


def test_belongs_to_same_acquisition_without_optional_tags() -> None:
    first, second = (group[0] for group in _per_ti_series(tis=(100.0, 180.0)))
    for ds in (first, second):
        for keyword in ("FrameOfReferenceUID", "SeriesNumber", "AcquisitionTime", "SeriesTime", "ProtocolName"):
            delattr(ds, keyword)
    assert belongs_to_same_acquisition(first, second)
    second.SeriesTime = "235959"
    first.SeriesTime = "000010"  # across midnight without dates: 11 s apart
    del first.SeriesDate, second.SeriesDate
    assert belongs_to_same_acquisition(first, second)
