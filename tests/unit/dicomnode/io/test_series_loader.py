"""Loading raw mapping series: grouping by position, timing from every place vendors put it, sorting, rescale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicomnode.io.series_loader import (
    MissingTimingError,
    SeriesLoadError,
    TimingKind,
    load_series,
    load_series_files,
)

SERIES_UID = generate_uid()
STUDY_UID = generate_uid()
ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def _image(
    value: float,
    *,
    position_z: float = 10.0,
    inversion_time_ms: float | None = None,
    comment: str | None = None,
    instance_number: int = 1,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    rescale: tuple[float, float] | None = None,
    acquisition_time: str | None = None,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.SeriesNumber = 7
    ds.SeriesDescription = "MOLLI_5(3)3_SAX_MID"
    ds.SequenceName = "*tfi2d1_4"
    ds.Modality = "MR"
    ds.NominalInterval = "950"
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0.0, 0.0, position_z]
    ds.ImageOrientationPatient = ORIENTATION
    ds.PixelSpacing = [1.5, 1.25]
    if inversion_time_ms is not None:
        ds.InversionTime = inversion_time_ms
    if comment is not None:
        ds.ImageComments = comment
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if acquisition_time is not None:
        ds.AcquisitionTime = acquisition_time
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = 3, 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((3, 4), value, dtype="<u2").tobytes()
    return ds


def test_images_are_sorted_by_inversion_time_not_instance_number() -> None:
    # MOLLI 5(3)3 acquisition order: 100, 1100, ... then the second inversion 180, 1180, ...
    acquisition_ti = [100, 1100, 2100, 180, 1180]
    datasets = [
        _image(ti / 10, inversion_time_ms=ti, instance_number=i + 1) for i, ti in enumerate(acquisition_ti)
    ]
    loaded = load_series(list(reversed(datasets)), TimingKind.INVERSION)
    (stack,) = loaded.slices
    assert stack.times_ms.tolist() == [100, 180, 1100, 1180, 2100]
    assert stack.images[:, 0, 0].tolist() == [10, 18, 110, 118, 210]
    assert [int(ds.InversionTime) for ds in stack.sources] == [100, 180, 1100, 1180, 2100]
    assert loaded.nominal_interval_ms == 950.0
    assert loaded.series_number == 7
    assert stack.pixel_spacing_mm == (1.5, 1.25)


def test_images_sharing_a_position_are_all_kept_and_slices_are_grouped() -> None:
    datasets = [_image(1, position_z=z, inversion_time_ms=ti) for z in (20.0, 10.0) for ti in (100, 100, 900)]
    loaded = load_series(datasets, "inversion")
    assert [stack.image_position_patient_mm[2] for stack in loaded.slices] == [10.0, 20.0]
    assert [len(stack.times_ms) for stack in loaded.slices] == [3, 3]


def test_effective_inversion_time_is_read_from_image_comments() -> None:
    datasets = [_image(1, comment="TIeff 180 ms"), _image(2, comment="TI 95"), _image(3, comment="TI=1200ms")]
    (stack,) = load_series(datasets, TimingKind.INVERSION).slices
    assert stack.times_ms.tolist() == [95.0, 180.0, 1200.0]


def test_t2_preparation_time_is_read_from_image_comments() -> None:
    datasets = [_image(5, comment="T2prep 55 ms"), _image(9, comment="T2prep 0 ms"), _image(7, comment="T2prep 25 ms")]
    (stack,) = load_series(datasets, TimingKind.T2_PREP).slices
    assert stack.times_ms.tolist() == [0.0, 25.0, 55.0]
    assert stack.images[:, 1, 1].tolist() == [9.0, 7.0, 5.0]


def test_phase_images_are_left_out() -> None:
    datasets = [
        _image(1, inversion_time_ms=100),
        _image(2, inversion_time_ms=100, image_type=("ORIGINAL", "PRIMARY", "P", "ND")),
        _image(3, inversion_time_ms=200),
    ]
    (stack,) = load_series(datasets, TimingKind.INVERSION).slices
    assert stack.images[:, 0, 0].tolist() == [1.0, 3.0]


def test_rescale_is_applied() -> None:
    (stack,) = load_series([_image(100, inversion_time_ms=100, rescale=(0.5, 3.0))], "inversion").slices
    assert stack.images[0, 0, 0] == pytest.approx(53.0)


def test_equal_times_keep_acquisition_order() -> None:
    datasets = [
        _image(2, inversion_time_ms=100, acquisition_time="101502.5", instance_number=1),
        _image(1, inversion_time_ms=100, acquisition_time="101500.0", instance_number=2),
    ]
    (stack,) = load_series(datasets, TimingKind.INVERSION).slices
    assert stack.images[:, 0, 0].tolist() == [1.0, 2.0]
    assert stack.acquisition_times_s.tolist() == pytest.approx([36900.0, 36902.5])


def test_missing_timing_names_the_places_looked_at() -> None:
    with pytest.raises(MissingTimingError, match="ImageComments"):
        load_series([_image(1, comment="no timing here")], TimingKind.INVERSION)


def test_only_phase_images_is_an_error() -> None:
    phase = _image(1, inversion_time_ms=100, image_type=("ORIGINAL", "PRIMARY", "P", "ND"))
    with pytest.raises(SeriesLoadError, match="no magnitude"):
        load_series([phase], TimingKind.INVERSION)


def test_instances_of_two_series_are_refused() -> None:
    other = _image(1, inversion_time_ms=100)
    other.SeriesInstanceUID = generate_uid()
    with pytest.raises(SeriesLoadError, match="2 series"):
        load_series([_image(1, inversion_time_ms=100), other], TimingKind.INVERSION)


def _enhanced(times_ms: list[float], *, t2_prep: bool) -> Dataset:
    ds = _image(0, inversion_time_ms=None)
    ds.SOPClassUID = EnhancedMRImageStorage
    del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing, ds.ImageType
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC_GATED", "NONE"]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [1.4, 1.4]
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = ORIENTATION
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for index, time_ms in enumerate(times_ms):
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 5.0]
        group.PlanePositionSequence = Sequence([position])
        content = Dataset()
        content.FrameAcquisitionDateTime = f"20240101101500.{index:06d}"
        if t2_prep:
            content.FrameComments = f"T2prep {time_ms:.0f} ms"
        group.FrameContentSequence = Sequence([content])
        modifier = Dataset()
        if not t2_prep:
            modifier.InversionTimes = [time_ms]
        group.MRModifierSequence = Sequence([modifier])
        frame_type = Dataset()
        frame_type.FrameType = ["ORIGINAL", "PRIMARY", "CARDIAC_GATED", "NONE"]
        frame_type.ComplexImageComponent = "PHASE" if index == 1 else "MAGNITUDE"
        group.MRImageFrameTypeSequence = Sequence([frame_type])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(times_ms)
    pixels = np.stack([np.full((3, 4), 10 * (i + 1), dtype="<u2") for i in range(len(times_ms))])
    ds.PixelData = pixels.tobytes()
    return ds


def test_enhanced_mr_frames_use_per_frame_inversion_times_and_skip_phase_frames() -> None:
    ds = _enhanced([1100.0, 999.0, 100.0, 180.0], t2_prep=False)
    (stack,) = load_series([ds], TimingKind.INVERSION).slices
    assert stack.times_ms.tolist() == [100.0, 180.0, 1100.0]
    assert stack.images[:, 0, 0].tolist() == [30.0, 40.0, 10.0]
    assert stack.frame_numbers == (3, 4, 1)
    assert stack.unique_sources == [ds]
    assert stack.pixel_spacing_mm == (1.4, 1.4)


def test_enhanced_mr_t2_preparation_from_frame_comments() -> None:
    ds = _enhanced([55.0, 0.0, 0.0, 25.0], t2_prep=True)
    (stack,) = load_series([ds], TimingKind.T2_PREP).slices
    assert stack.times_ms.tolist() == [0.0, 25.0, 55.0]


def test_files_are_read_from_disk(tmp_path: Path) -> None:
    paths = []
    for index, ti in enumerate((300, 100)):
        path = tmp_path / f"{index}.dcm"
        _image(ti, inversion_time_ms=ti).save_as(path, enforce_file_format=True)
        paths.append(path)
    (stack,) = load_series_files(paths, TimingKind.INVERSION).slices
    assert stack.times_ms.tolist() == [100.0, 300.0]


def test_unreadable_file_is_a_load_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"not dicom")
    with pytest.raises(SeriesLoadError, match="cannot read"):
        load_series_files([path], TimingKind.INVERSION)
