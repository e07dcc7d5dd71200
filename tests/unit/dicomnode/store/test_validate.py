"""Validation of received data sets (constructed instances and real SEG / Parametric Map / RTSTRUCT files)."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import create_file_meta

from dicomnode.errors import CannotUnderstandError, DatasetMismatchError, OutOfResourcesError
from dicomnode.store.validate import (
    encode_file_meta,
    inspect_instance,
    parse_instance,
    received_file_meta,
    split_part10,
    validate_dataset,
)
from tests.dicom_builders import mr_image, parametric_map, write_part10
from tests.shared_data import SHARED_DATA

SHARED = SHARED_DATA


def _validate(ds: pydicom.Dataset, **kwargs) -> None:
    validate_dataset(
        ds, transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, max_image_pixels=16_777_216, **kwargs
    )


def test_valid_mr_image_passes() -> None:
    ds = mr_image()
    _validate(ds, context_sop_class_uid=ds.SOPClassUID, affected_sop_instance_uid=ds.SOPInstanceUID)


@pytest.mark.parametrize(
    "path",
    [
        SHARED / "seg/liver.dcm",  # dcmqi, 1-bit frames
        SHARED / "seg/seg_image_ct_binary_fractional.dcm",  # highdicom, 8-bit fractional
        SHARED / "seg/sparse-labelmap-ppv5.dcm",  # Label Map Segmentation
        SHARED / "paramap/parametric_map_float.dcm",  # Float Pixel Data
        SHARED / "rtstruct/invalid_reference_rt.dcm",
        SHARED / "sr/dcmqi_tid1500_sr.dcm",
    ],
)
def test_real_world_objects_pass(path: Path) -> None:
    meta, data = split_part10(path.read_bytes())
    parsed = parse_instance(data, meta)
    _validate(parsed.dataset, context_sop_class_uid=meta.MediaStorageSOPClassUID)


def test_missing_pixel_data_is_a_mismatch() -> None:
    ds = mr_image()
    del ds.PixelData
    with pytest.raises(DatasetMismatchError, match="without PixelData"):
        _validate(ds)


def test_parametric_map_needs_float_or_integer_pixels() -> None:
    ds = parametric_map()
    _validate(ds)
    del ds.FloatPixelData
    with pytest.raises(DatasetMismatchError, match="FloatPixelData"):
        _validate(ds)


def test_sop_class_other_than_the_context_is_a_mismatch() -> None:
    with pytest.raises(DatasetMismatchError, match="differs from the presentation context"):
        _validate(mr_image(), context_sop_class_uid="1.2.840.10008.5.1.4.1.1.4.1")


def test_sop_instance_other_than_the_request_is_a_mismatch() -> None:
    with pytest.raises(DatasetMismatchError, match="differs from the request"):
        _validate(mr_image(), affected_sop_instance_uid="1.2.3.4")


def test_pixel_data_length_must_match_dimensions() -> None:
    ds = mr_image(rows=16, columns=16)
    ds.PixelData = ds.PixelData[:-64]
    with pytest.raises(DatasetMismatchError, match="holds 448 bytes, expected 512"):
        _validate(ds)


def test_absurd_dimensions_are_out_of_resources() -> None:
    ds = mr_image()
    ds.NumberOfFrames = 100_000
    with pytest.raises(OutOfResourcesError, match="16 x 16 x 100000 frames"):
        _validate(ds)


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_uid_is_a_mismatch(keyword: str) -> None:
    ds = mr_image()
    delattr(ds, keyword)
    with pytest.raises(DatasetMismatchError, match=keyword):
        _validate(ds)


def test_uid_that_could_escape_the_storage_folder_is_refused() -> None:
    ds = mr_image()
    ds.StudyInstanceUID = "../../tmp"
    with pytest.raises(CannotUnderstandError, match="not a UID"):
        _validate(ds)


def test_truncated_data_set_cannot_be_understood(tmp_path: Path) -> None:
    meta, data = split_part10(write_part10(mr_image(), tmp_path / "a.dcm").read_bytes())
    with pytest.raises(CannotUnderstandError, match="truncated"):
        parse_instance(data[:-100], meta)


def test_truncated_encapsulated_pixel_data_cannot_be_understood() -> None:
    meta, data = split_part10(Path(get_testdata_file("JPEG2000.dcm")).read_bytes())
    parse_instance(data, meta)
    with pytest.raises(CannotUnderstandError, match="truncated"):
        parse_instance(data[:-10], meta)


def test_value_breaking_its_vr_cannot_be_understood(tmp_path: Path) -> None:
    meta, data = split_part10(write_part10(mr_image(), tmp_path / "a.dcm").read_bytes())
    # Rows (0028,0010) US with a 3-byte value: explicit VR little endian header, then three bytes.
    rows_element = b"\x28\x00\x10\x00US\x02\x00\x10\x00"
    assert rows_element in data
    broken = data.replace(rows_element, b"\x28\x00\x10\x00US\x03\x00\x10\x00\x00")
    parsed = parse_instance(broken, meta)
    with pytest.raises(CannotUnderstandError, match=r"\(0028,0010\)"):
        _validate(parsed.dataset)


def test_garbage_is_not_a_part10_file() -> None:
    with pytest.raises(CannotUnderstandError):
        split_part10(b"\x00" * 64)


# inspect_instance: the ingest path's check, decoding only up to the pixel data


def _encoded(ds: pydicom.Dataset, tmp_path: Path, transfer_syntax_uid: str | None = None):  # noqa: ANN202
    if transfer_syntax_uid is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax_uid
    return split_part10(write_part10(ds, tmp_path / "in.dcm").read_bytes())


def _inspect(meta: pydicom.dataset.FileMetaDataset, data: bytes, **kwargs):  # noqa: ANN202
    return inspect_instance(data, meta, max_image_pixels=16_777_216, **kwargs)


@pytest.mark.parametrize("transfer_syntax_uid", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_inspect_reads_the_header_and_checks_pixels(tmp_path: Path, transfer_syntax_uid: str) -> None:
    ds = mr_image(rows=16, columns=16, inversion_time_ms=180.0)
    meta, data = _encoded(ds, tmp_path, transfer_syntax_uid)

    inspected = _inspect(
        meta, data, context_sop_class_uid=ds.SOPClassUID, affected_sop_instance_uid=ds.SOPInstanceUID
    )

    assert (inspected.sop_instance_uid, inspected.series_instance_uid) == (ds.SOPInstanceUID, ds.SeriesInstanceUID)
    assert inspected.header.InversionTime == 180.0 and "PixelData" not in inspected.header
    assert inspected.transfer_syntax_uid == transfer_syntax_uid


@pytest.mark.parametrize("transfer_syntax_uid", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_inspect_refuses_pixel_data_of_the_wrong_length(tmp_path: Path, transfer_syntax_uid: str) -> None:
    ds = mr_image(rows=16, columns=16)
    ds.PixelData = ds.PixelData[:-64]
    meta, data = _encoded(ds, tmp_path, transfer_syntax_uid)
    with pytest.raises(DatasetMismatchError, match="holds 448 bytes, expected 512"):
        _inspect(meta, data)


def test_inspect_refuses_truncated_pixel_data(tmp_path: Path) -> None:
    meta, data = _encoded(mr_image(), tmp_path)
    with pytest.raises(CannotUnderstandError, match="truncated: element \\(7FE0,0010\\) declares 512 bytes"):
        _inspect(meta, data[:-100])


def test_inspect_walks_encapsulated_fragments_to_their_delimiter() -> None:
    meta, data = split_part10(Path(get_testdata_file("JPEG2000.dcm")).read_bytes())
    _inspect(meta, data, context_sop_class_uid=meta.MediaStorageSOPClassUID)
    with pytest.raises(CannotUnderstandError, match="truncated"):
        _inspect(meta, data[:-10])
    # A fragment header overwritten: the walk finds no item tag where one must be.
    start = data.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    broken = data[:start] + b"\x00" * 8 + data[start + 8 :]
    with pytest.raises(CannotUnderstandError, match="where an item was expected"):
        _inspect(meta, broken)


def test_inspect_refuses_a_value_breaking_its_vr_without_decoding_it(tmp_path: Path) -> None:
    meta, data = _encoded(mr_image(), tmp_path)
    rows_element = b"\x28\x00\x10\x00US\x02\x00\x10\x00"
    broken = data.replace(rows_element, b"\x28\x00\x10\x00US\x03\x00\x10\x00\x00")
    with pytest.raises(CannotUnderstandError, match=r"\(0028,0010\) cannot be decoded under its VR \(3 bytes"):
        _inspect(meta, broken)


def test_inspect_checks_float_pixel_data_and_uids(tmp_path: Path) -> None:
    meta, data = _encoded(parametric_map(rows=8, columns=8), tmp_path)
    assert _inspect(meta, data).sop_class_uid == "1.2.840.10008.5.1.4.1.1.30"
    ds = mr_image()
    ds.SeriesInstanceUID = "1.2.3/../../x"
    meta, data = _encoded(ds, tmp_path)
    with pytest.raises(CannotUnderstandError, match="SeriesInstanceUID .* is not a UID"):
        _inspect(meta, data)
    with pytest.raises(DatasetMismatchError, match="differs from the presentation context"):
        _inspect(*_encoded(mr_image(), tmp_path), context_sop_class_uid="1.2.840.10008.5.1.4.1.1.7")


def test_inspect_decodes_deflated_and_big_endian_data_sets_whole(tmp_path: Path) -> None:
    for path in (get_testdata_file("image_dfl.dcm"), get_testdata_file("MR_small_bigendian.dcm")):
        meta, data = split_part10(Path(path).read_bytes())
        inspected = _inspect(meta, data)
        assert inspected.header.Rows > 0 and inspected.transfer_syntax_uid == meta.TransferSyntaxUID


def test_encode_file_meta_matches_pydicom(tmp_path: Path) -> None:
    meta, _data = _encoded(mr_image(), tmp_path)
    meta.SourceApplicationEntityTitle = "SCANNER"  # odd length: padded with a space
    meta.ImplementationVersionName = "OFFIS_DCMTK_367"
    expected = DicomBytesIO()
    expected.is_little_endian, expected.is_implicit_VR = True, False
    write_file_meta_info(expected, FileMetaDataset(meta), enforce_standard=True)
    assert encode_file_meta(FileMetaDataset(meta)) == expected.getvalue()


def test_the_received_file_meta_encodes_as_pynetdicoms_and_the_source_ae_leaves_it_unchanged() -> None:
    sop_class, sop_instance = "1.2.840.10008.5.1.4.1.1.4", "1.2.826.0.1.3680043.8.498.1234567890123"
    built = received_file_meta(sop_class, sop_instance, ExplicitVRLittleEndian)
    theirs = create_file_meta(sop_class_uid=pydicom.uid.UID(sop_class), sop_instance_uid=pydicom.uid.UID(sop_instance),
                              transfer_syntax=ExplicitVRLittleEndian)
    assert encode_file_meta(built) == encode_file_meta(theirs)
    keys = set(built.keys())
    with_ae = encode_file_meta(built, source_ae_title="MR_CONSOLE")
    assert set(built.keys()) == keys  # the caller's meta is not changed
    reference = FileMetaDataset(theirs)
    reference.SourceApplicationEntityTitle = "MR_CONSOLE"
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, reference, enforce_standard=True)
    assert with_ae == buffer.getvalue()
