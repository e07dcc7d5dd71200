"""Round trips of reconstructed maps through MR Image Storage and Parametric Map files, checked by dciodvfy.

Sources: a cardiac MOLLI image built here, and pydicom's MR_small.dcm (a real Toshiba MR image, shipped with
pydicom, MIT licence) to check that copying from a scanner's dataset stays valid.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from inference.mapping import MapKind
from reports.map_mr import build_mr_map, read_map_ms
from reports.map_parametric import build_parametric_map

ROWS, COLUMNS = 24, 20


def molli_source(instance: int, inversion_time_ms: float, *, study_uid: str, series_uid: str,
                 frame_uid: str, field_strength_t: float = 1.5) -> Dataset:
    """One raw MOLLI image of a short-axis slice, as a scanner would send it."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Test^Mapping"
    ds.PatientID = "MAP001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate, ds.StudyTime = "20240301", "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 12
    ds.SeriesDescription = "MOLLI 5(3)3 SAX MID"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "Scanner Co"
    ds.InstanceNumber = instance
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.ScanningSequence = ["GR", "IR"]
    ds.SequenceVariant = ["SK", "SS"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 2.8
    ds.EchoTime = 1.12
    ds.EchoTrainLength = 1
    ds.InversionTime = inversion_time_ms
    ds.FlipAngle = 35
    ds.MagneticFieldStrength = field_strength_t
    ds.PatientPosition = "HFS"
    ds.PixelSpacing = [1.40625, 1.40625]
    ds.ImageOrientationPatient = [0.6, 0.8, 0.0, -0.48, 0.36, -0.8]
    ds.ImagePositionPatient = [-110.5, -80.25, 95.0]
    ds.SliceThickness = 8
    ds.SliceLocation = -12.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.full((ROWS, COLUMNS), 300, dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture
def molli_series() -> list[Dataset]:
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    ti_ms = [120, 200, 1120, 1200, 2120, 2200, 3120, 4120]
    return [
        molli_source(i + 1, ti, study_uid=study_uid, series_uid=series_uid, frame_uid=frame_uid)
        for i, ti in enumerate(ti_ms)
    ]


@pytest.fixture
def t1_map_ms() -> np.ndarray:
    rng = np.random.default_rng(8)
    values = rng.uniform(200.0, 2000.0, (ROWS, COLUMNS))
    values[0, :3] = np.nan  # no valid fit
    values[1, 0] = 70000.0  # beyond uint16
    values[1, 1] = -5.0
    return values


def dciodvfy_errors(path: Path) -> list[str]:
    completed = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    report = completed.stdout + completed.stderr
    assert report.strip(), "dciodvfy printed nothing"
    return [line for line in report.splitlines() if line.startswith("Error")]


def test_mr_map_is_valid_and_round_trips_in_ms(tmp_path, molli_series, t1_map_ms):
    source = molli_series[0]
    series_uid, sop_uid = generate_uid(), generate_uid()
    dataset = build_mr_map(
        t1_map_ms, source, MapKind.T1, series_instance_uid=series_uid, sop_instance_uid=sop_uid,
        series_number=1012, derivation_description="MOLLI 3-parameter + Look-Locker, 8 images",
        further_source_images=molli_series[1:],
    )
    path = tmp_path / "t1map.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []

    read = pydicom.dcmread(path)
    expected = np.clip(np.rint(np.nan_to_num(t1_map_ms, nan=0.0)), 0, 65535)
    np.testing.assert_array_equal(read_map_ms(read), expected)
    assert read.pixel_array.dtype == np.uint16
    assert read.pixel_array[0, 0] == 0 and read.pixel_array[1, 0] == 65535 and read.pixel_array[1, 1] == 0
    assert list(read.ImageType) == ["DERIVED", "PRIMARY", "T1 MAP"]
    assert read.SeriesDescription.endswith("T1MAP")
    assert (float(read.RescaleSlope), float(read.RescaleIntercept)) == (1.0, 0.0)
    assert (float(read.WindowCenter), float(read.WindowWidth)) == (1000.0, 1200.0)
    assert read.StudyInstanceUID == source.StudyInstanceUID and read.PatientID == source.PatientID
    assert read.SeriesInstanceUID == series_uid != source.SeriesInstanceUID
    assert read.FrameOfReferenceUID == source.FrameOfReferenceUID
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        np.testing.assert_allclose([float(v) for v in read[keyword].value], [float(v) for v in source[keyword].value])
    assert float(read.SliceLocation) == float(source.SliceLocation)
    referenced = {item.ReferencedSOPInstanceUID for item in read.SourceImageSequence}
    assert referenced == {image.SOPInstanceUID for image in molli_series}
    assert "Look-Locker" in read.DerivationDescription


def test_t2_mr_map_uses_a_t2_window_and_type(tmp_path, molli_series):
    t2_map_ms = np.full((ROWS, COLUMNS), 48.6)
    dataset = build_mr_map(
        t2_map_ms, molli_series[0], MapKind.T2, series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(), series_number=1013,
    )
    path = tmp_path / "t2map.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    assert list(read.ImageType)[2] == "T2 MAP" and read.SeriesDescription.endswith("T2MAP")
    assert np.all(read_map_ms(read) == 49.0)
    assert float(read.WindowCenter) < 100.0


def test_mr_map_from_a_real_scanner_image_is_valid(tmp_path):
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    values = np.linspace(0.0, 3000.0, source.Rows * source.Columns).reshape(source.Rows, source.Columns)
    dataset = build_mr_map(
        values, source, MapKind.T1, series_instance_uid=generate_uid(), sop_instance_uid=generate_uid(),
        series_number=99,
    )
    path = tmp_path / "t1map_real.dcm"
    dataset.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    np.testing.assert_array_equal(read_map_ms(pydicom.dcmread(path)), np.rint(values))


def test_parametric_map_is_valid_and_round_trips_float_ms(tmp_path, molli_series, t1_map_ms):
    sop_uid = generate_uid()
    parametric_map = build_parametric_map(
        t1_map_ms, molli_series, MapKind.T1, series_instance_uid=generate_uid(), sop_instance_uid=sop_uid,
        series_number=1014, content_description="MOLLI 3-parameter + Look-Locker",
    )
    path = tmp_path / "t1pm.dcm"
    parametric_map.save_as(path)
    assert dciodvfy_errors(path) == []

    dataset = pydicom.dcmread(path)
    read = hd.pm.ParametricMap.from_dataset(dataset)
    assert read.SOPInstanceUID == sop_uid
    pixels = dataset.pixel_array
    assert pixels.dtype == np.float32
    expected = np.nan_to_num(t1_map_ms.astype(np.float32), nan=0.0)
    np.testing.assert_array_equal(pixels.reshape(ROWS, COLUMNS), expected)
    mapping = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "ms"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeValue == "113063"
    assert (float(mapping.RealWorldValueSlope), float(mapping.RealWorldValueIntercept)) == (1.0, 0.0)
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in dataset.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {image.SOPInstanceUID for image in molli_series}
    assert dataset.StudyInstanceUID == molli_series[0].StudyInstanceUID
    assert dataset.SeriesDescription.endswith("T1MAP")


def test_builders_refuse_a_map_that_does_not_fit_the_source(molli_series):
    wrong = np.zeros((ROWS + 1, COLUMNS))
    ids = {"series_instance_uid": generate_uid(), "sop_instance_uid": generate_uid(), "series_number": 1}
    with pytest.raises(ValueError, match="shape"):
        build_mr_map(wrong, molli_series[0], MapKind.T1, **ids)
    with pytest.raises(ValueError, match="shape"):
        build_parametric_map(wrong, molli_series, MapKind.T1, **ids)
    with pytest.raises(ValueError, match="T2MAP"):
        build_mr_map(np.zeros((ROWS, COLUMNS)), molli_series[0], MapKind.T2, series_description="MAP T1MAP", **ids)


def enhanced_source(molli_series: list[Dataset]) -> Dataset:
    """An Enhanced MR image of two slices (frames 1-2 at the first position, 3-4 at the second) whose geometry
    lives in the functional groups only, as an Enhanced MR MOLLI series carries it."""
    first = molli_series[0]
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "Modality",
                    "SeriesInstanceUID", "SeriesNumber", "FrameOfReferenceUID", "PositionReferenceIndicator",
                    "MRAcquisitionType", "MagneticFieldStrength", "PatientPosition", "SamplesPerPixel",
                    "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
                    "PixelRepresentation"):
        setattr(ds, keyword, first[keyword].value)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = 4
    ds.EchoPulseSequence = "GRADIENT"
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing, measures.SliceThickness = [1.40625, 1.40625], 8
    orientation = Dataset()
    orientation.ImageOrientationPatient = [0.6, 0.8, 0.0, -0.48, 0.36, -0.8]
    timing = Dataset()
    timing.RepetitionTime, timing.FlipAngle, timing.EchoTrainLength = 2.8, 35, 1
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.MRTimingAndRelatedParametersSequence = [timing]
    frames = []
    for index in range(4):
        position = Dataset()
        position.ImagePositionPatient = [-110.5, -80.25, 95.0 + 10.0 * (index // 2)]
        modifier = Dataset()
        modifier.InversionRecovery = "YES"
        group = Dataset()
        group.PlanePositionSequence = [position]
        group.MRModifierSequence = [modifier]
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.PixelData = np.full((4, ROWS, COLUMNS), 300, dtype=np.uint16).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_maps_of_an_enhanced_mr_slice_take_its_frames_geometry(tmp_path, molli_series, t1_map_ms):
    source = enhanced_source(molli_series)
    ids = {"series_instance_uid": generate_uid(), "sop_instance_uid": generate_uid(), "series_number": 99}
    mr_map = build_mr_map(t1_map_ms, source, MapKind.T1, frame_number=3,
                          referenced_frame_numbers={source.SOPInstanceUID: [3, 4]}, **ids)
    path = tmp_path / "enhanced_t1map.dcm"
    mr_map.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    read = pydicom.dcmread(path)
    assert [float(v) for v in read.ImagePositionPatient] == [-110.5, -80.25, 105.0]  # the second slice
    assert float(read.PixelSpacing[0]) == 1.40625 and float(read.SliceThickness) == 8
    assert list(read.ScanningSequence) == ["GR", "IR"] and float(read.RepetitionTime) == 2.8
    (reference,) = read.SourceImageSequence
    assert list(reference.ReferencedFrameNumber) == [3, 4]
    assert "ImagePositionPatient" not in source  # the source itself is left as it came

    parametric_map = build_parametric_map(t1_map_ms, [source], MapKind.T1, frame_number=3, **ids)
    pm_path = tmp_path / "enhanced_t1pm.dcm"
    parametric_map.save_as(pm_path)
    assert dciodvfy_errors(pm_path) == []
    (frame,) = pydicom.dcmread(pm_path).PerFrameFunctionalGroupsSequence
    assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == [-110.5, -80.25, 105.0]
    with pytest.raises(ValueError, match="frame_number must be in 1..4"):
        build_mr_map(t1_map_ms, source, MapKind.T1, frame_number=5, **ids)
