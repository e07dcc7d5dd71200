"""Checks a received data set before anything is written: parsable, right SOP class, UIDs, plausible pixel data."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from io import BytesIO

from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID

from dicomnode.errors import CannotUnderstandError, DatasetMismatchError, OutOfResourcesError
from dicomnode.sop_classes import ENCAPSULATED_PDF, FLOAT_PIXEL_SOP_CLASSES, IMAGE_SOP_CLASSES

LOGGER = logging.getLogger(__name__)

PREAMBLE = b"\x00" * 128 + b"DICM"
# Only digits and dots: a UID becomes a file name, so anything else could escape the storage folder.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_MAX_LENGTH = 64
REQUIRED_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
ENCAPSULATED_ITEM_TAG = (
    b"\xfe\xff\x00\xe0"  # (FFFE,E000) little endian: first item of encapsulated pixel data
)
UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class ParsedInstance:
    """A received instance as bytes and as a data set.

    Attributes
    ----------
    dataset : Dataset
        The decoded data set, ``file_meta`` attached.
    file_bytes : bytes
        The DICOM Part 10 file (preamble, file meta, data set encoded as received).
    dataset_bytes : bytes
        The data set as encoded by the sender (no file meta); its hash tells identical re-sends apart.
    """

    dataset: Dataset
    file_bytes: bytes
    dataset_bytes: bytes


def encode_file_meta(file_meta: FileMetaDataset) -> bytes:
    """Encode the file meta group (with its group length) as it follows the preamble in a Part 10 file."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_file_meta_info(buffer, file_meta, enforce_standard=True)
    return buffer.getvalue()


def split_part10(file_bytes: bytes) -> tuple[FileMetaDataset, bytes]:
    """Split a DICOM Part 10 file into its file meta and the encoded data set.

    Raises
    ------
    CannotUnderstandError
        If the bytes are not a Part 10 file.
    """
    try:
        file_meta = dcmread(BytesIO(file_bytes), stop_before_pixels=True, specific_tags=[]).file_meta
    except (InvalidDicomError, EOFError, OSError, ValueError) as error:
        raise CannotUnderstandError(f"not a DICOM Part 10 file: {error}") from error
    if file_bytes[128:132] != b"DICM" or "TransferSyntaxUID" not in file_meta:
        raise CannotUnderstandError(
            "not a DICOM Part 10 file: expected preamble, 'DICM' and a transfer syntax"
        )
    meta_length = len(encode_file_meta(file_meta))
    # Re-encoding may differ from the sender's meta in length; find the data set by the group length it declared.
    declared = file_meta.get("FileMetaInformationGroupLength")
    start = 132 + 12 + int(declared) if declared is not None else 132 + meta_length
    return file_meta, file_bytes[start:]


def parse_instance(dataset_bytes: bytes, file_meta: FileMetaDataset) -> ParsedInstance:
    """Decode a data set received in the transfer syntax named by ``file_meta``.

    Raises
    ------
    CannotUnderstandError
        If the data set is truncated or cannot be decoded.
    """
    file_bytes = PREAMBLE + encode_file_meta(file_meta) + dataset_bytes
    stream = BytesIO(file_bytes)
    try:
        dataset = dcmread(stream)
    except Exception as error:  # pydicom raises many types for malformed input; all mean "cannot understand"
        raise CannotUnderstandError(f"data set cannot be parsed: {type(error).__name__}: {error}") from error
    # pydicom stops quietly at a missing sequence delimiter, leaving the stream short of its end.
    if stream.tell() < len(file_bytes):
        raise CannotUnderstandError(
            f"data set truncated: parsing stopped at byte {stream.tell()} of {len(file_bytes)}"
        )
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        length = getattr(raw, "length", UNDEFINED_LENGTH)
        value = getattr(raw, "value", None)
        if (
            getattr(raw, "is_raw", False)
            and length != UNDEFINED_LENGTH
            and value is not None
            and len(value) < length
        ):
            raise CannotUnderstandError(
                f"data set truncated: element {tag} declares {length} bytes, only {len(value)} received"
            )
    return ParsedInstance(dataset=dataset, file_bytes=file_bytes, dataset_bytes=dataset_bytes)


def validate_dataset(
    dataset: Dataset,
    *,
    transfer_syntax_uid: str,
    max_image_pixels: int,
    context_sop_class_uid: str | None = None,
    affected_sop_instance_uid: str | None = None,
) -> None:
    """Check that a data set can be stored and analysed.

    Parameters
    ----------
    dataset : Dataset
        The decoded data set.
    transfer_syntax_uid : str
        The syntax it was encoded in (native syntaxes get their pixel data length checked).
    max_image_pixels : int
        Rows x Columns x frames above this is refused as absurd.
    context_sop_class_uid, affected_sop_instance_uid : str, optional
        The presentation context's abstract syntax and the C-STORE request's SOP Instance UID, which the data
        set must match.

    Raises
    ------
    CannotUnderstandError
        A value cannot be decoded under its VR, or a UID is not a valid UID.
    DatasetMismatchError
        Missing UIDs, a SOP class other than the context's, an image without (consistent) pixel data.
    OutOfResourcesError
        The image dimensions exceed ``max_image_pixels``.
    """
    _check_decodable(dataset)
    uids = {keyword: _uid(dataset, keyword) for keyword in REQUIRED_UID_KEYWORDS}
    sop_class_uid = uids["SOPClassUID"]
    if context_sop_class_uid is not None and sop_class_uid != context_sop_class_uid:
        raise DatasetMismatchError(
            f"SOP Class UID {sop_class_uid} in the data set differs from the presentation context's "
            f"{context_sop_class_uid}"
        )
    if affected_sop_instance_uid is not None and uids["SOPInstanceUID"] != affected_sop_instance_uid.strip(
        "\0 "
    ):
        raise DatasetMismatchError(
            f"SOP Instance UID {uids['SOPInstanceUID']} differs from the request's {affected_sop_instance_uid}"
        )
    if sop_class_uid in IMAGE_SOP_CLASSES:
        _check_pixels(dataset, sop_class_uid, UID(transfer_syntax_uid), max_image_pixels)
    elif sop_class_uid == ENCAPSULATED_PDF and not dataset.get("EncapsulatedDocument"):
        raise DatasetMismatchError("Encapsulated PDF without Encapsulated Document (0042,0011)")


def _check_decodable(dataset: Dataset) -> None:
    # The message names the element only: a value that fails to decode may be patient data.
    for tag in list(dataset.keys()):
        try:
            element = dataset[tag]
        except Exception as error:  # pydicom raises several types for values that break their VR
            raise CannotUnderstandError(
                f"element {tag} cannot be decoded under its VR ({type(error).__name__})"
            ) from error
        if element.VR == "SQ":
            for item in element.value:
                _check_decodable(item)


def _uid(dataset: Dataset, keyword: str) -> str:
    value = str(dataset.get(keyword) or "").strip("\0 ")
    if not value:
        raise DatasetMismatchError(f"{keyword} is missing or empty; every stored instance needs it")
    if len(value) > UID_MAX_LENGTH or not UID_PATTERN.fullmatch(value):
        raise CannotUnderstandError(f"{keyword} {value[:80]!r} is not a UID (digits and dots, at most 64)")
    return value


def _positive_int(dataset: Dataset, keyword: str, default: int | None = None) -> int:
    value = dataset.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise DatasetMismatchError(f"{keyword} is missing; an image needs it")
        value = default
    try:
        number = int(value)
    except (TypeError, ValueError) as error:
        raise CannotUnderstandError(f"{keyword} must be an integer, got {value!r}") from error
    if number <= 0:
        raise DatasetMismatchError(f"{keyword} must be positive, got {number}")
    return number


def _check_pixels(dataset: Dataset, sop_class_uid: str, transfer_syntax: UID, max_image_pixels: int) -> None:
    rows = _positive_int(dataset, "Rows")
    columns = _positive_int(dataset, "Columns")
    frames = _positive_int(dataset, "NumberOfFrames", default=1)
    n_pixels = rows * columns * frames
    if n_pixels > max_image_pixels:
        raise OutOfResourcesError(
            f"image of {rows} x {columns} x {frames} frames = {n_pixels} pixels exceeds the limit of "
            f"{max_image_pixels}"
        )
    float_keywords = (
        ("FloatPixelData", "DoubleFloatPixelData") if sop_class_uid in FLOAT_PIXEL_SOP_CLASSES else ()
    )
    present = [keyword for keyword in ("PixelData", *float_keywords) if dataset.get(keyword) is not None]
    if not present:
        expected = " or ".join(("PixelData", *float_keywords))
        raise DatasetMismatchError(f"image SOP class {sop_class_uid} without {expected}")
    keyword = present[0]
    value = dataset[keyword].value
    samples = _positive_int(dataset, "SamplesPerPixel", default=1 if keyword != "PixelData" else None)
    if keyword == "PixelData" and transfer_syntax.is_compressed:
        if not value.startswith(ENCAPSULATED_ITEM_TAG):
            raise DatasetMismatchError(
                f"Pixel Data is not encapsulated although the syntax {transfer_syntax} is"
            )
        return
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword) or _positive_int(
        dataset, "BitsAllocated"
    )
    expected_bytes = -(-n_pixels * samples * bits // 8)
    if len(value) not in (expected_bytes, expected_bytes + expected_bytes % 2):
        raise DatasetMismatchError(
            f"{keyword} holds {len(value)} bytes, expected {expected_bytes} for {rows} x {columns} x {frames} "
            f"frames x {samples} samples x {bits} bits"
        )
