"""Small, realistic DICOM data sets for tests of the node (MR mapping images as scanners write them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"


def file_meta_for(dataset: Dataset, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax_uid
    return meta


def _patient_and_study(ds: Dataset, study_uid: str | None) -> None:
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MYO-0042"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CMR mapping"


def mr_image(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    description: str = "MOLLI 5(3)3 SAX",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    inversion_time_ms: float | None = None,
    image_comments: str | None = None,
    images_in_acquisition: int | None = None,
    instance_number: int = 1,
    series_number: int = 10,
    manufacturer: str = "SIEMENS",
    sequence_name: str = "*tfi2d1_16",
    rows: int = 16,
    columns: int = 16,
    seed: int = 0,
) -> Dataset:
    """One MR Image Storage instance with uint16 pixels and file meta (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    _patient_and_study(ds, study_uid)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.Modality = "MR"
    ds.Manufacturer = manufacturer
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SK"
    ds.SequenceName = sequence_name
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 2.5
    ds.EchoTime = 1.1
    ds.FlipAngle = 35
    ds.SliceThickness = 8
    if inversion_time_ms is not None:
        ds.InversionTime = inversion_time_ms
    if image_comments is not None:
        ds.ImageComments = image_comments
    if images_in_acquisition is not None:
        ds.ImagesInAcquisition = images_in_acquisition
    ds.ImagePositionPatient = [-100.0, -80.0, 20.0]
    ds.ImageOrientationPatient = [0.7, 0.7, 0.0, -0.3, 0.3, -0.9]
    ds.PixelSpacing = [1.4, 1.4]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = np.random.default_rng(seed).integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = file_meta_for(ds)
    return ds


def enhanced_mr(
    *,
    inversion_times_ms: Sequence[float] = (100.0, 180.0, 260.0, 1100.0, 1180.0, 2100.0, 3100.0, 4100.0),
    t2_prep: bool = False,
    description: str = "ShMOLLI SAX",
    rows: int = 8,
    columns: int = 8,
) -> Dataset:
    """An Enhanced MR Image Storage instance, one frame per inversion time (or T2-prep duration)."""
    ds = Dataset()
    ds.SOPClassUID = ENHANCED_MR_IMAGE_STORAGE
    ds.SOPInstanceUID = generate_uid()
    _patient_and_study(ds, None)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "T1", "NONE"]
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 20
    ds.SeriesDescription = description
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(inversion_times_ms)
    per_frame = []
    for time_ms in inversion_times_ms:
        modifier = Dataset()
        modifier.InversionRecovery = "NO" if t2_prep else "YES"
        modifier.T2Preparation = "YES" if t2_prep else "NO"
        if not t2_prep:
            modifier.InversionTimes = [time_ms]
        frame_type = Dataset()
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "T1", "NONE"]
        frame_type.ComplexImageComponent = "MAGNITUDE"
        group = Dataset()
        group.MRModifierSequence = DicomSequence([modifier])
        group.MRImageFrameTypeSequence = DicomSequence([frame_type])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    ds.SharedFunctionalGroupsSequence = DicomSequence([Dataset()])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.zeros((len(inversion_times_ms), rows, columns), dtype=np.uint16).tobytes()
    ds.file_meta = file_meta_for(ds)
    return ds


def parametric_map(
    *, description: str = "", lut_label: str = "T1", rows: int = 8, columns: int = 8
) -> Dataset:
    """A float32 Parametric Map Storage instance with a Real World Value Mapping labelled ``lut_label``."""
    ds = Dataset()
    ds.SOPClassUID = PARAMETRIC_MAP_STORAGE
    ds.SOPInstanceUID = generate_uid()
    _patient_and_study(ds, None)
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.Modality = "MR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 30
    ds.SeriesDescription = description
    ds.NumberOfFrames = 1
    mapping = Dataset()
    mapping.LUTLabel = lut_label
    mapping.LUTExplanation = f"{lut_label} relaxation time"
    mapping.RealWorldValueFirstValueMapped = 0
    mapping.RealWorldValueLastValueMapped = 5000
    group = Dataset()
    group.RealWorldValueMappingSequence = DicomSequence([mapping])
    ds.SharedFunctionalGroupsSequence = DicomSequence([group])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.full((rows, columns), 1000.0, dtype=np.float32).tobytes()
    ds.file_meta = file_meta_for(ds)
    return ds


def write_part10(dataset: Dataset, path: Path) -> Path:
    """Write a data set with its file meta as a DICOM Part 10 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, dataset, enforce_file_format=True)
    return path


def molli_series(
    *,
    inversion_times_ms: Sequence[float] = (100.0, 1100.0, 2100.0, 3100.0, 4100.0, 180.0, 1180.0, 260.0),
    images_in_acquisition: bool = True,
    study_uid: str | None = None,
) -> list[Dataset]:
    """A Siemens-style MOLLI raw series: TIs out of order, all images at one slice position."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    count = len(inversion_times_ms) if images_in_acquisition else None
    return [
        mr_image(
            study_uid=study_uid,
            series_uid=series_uid,
            inversion_time_ms=ti,
            instance_number=i + 1,
            images_in_acquisition=count,
            seed=i,
        )
        for i, ti in enumerate(inversion_times_ms)
    ]
