"""Checks a received data set before anything is written: parsable, right SOP class, UIDs, plausible pixel data."""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import cast

from pydicom import Dataset, config, dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from dicomnode.errors import CannotUnderstandError, DatasetMismatchError, MyomapError, OutOfResourcesError
from dicomnode.sop_classes import ENCAPSULATED_PDF, FLOAT_PIXEL_SOP_CLASSES, IMAGE_SOP_CLASSES
from dicomnode.store.inflate import BUDGET, DEFAULT_MAX_INFLATED_BYTES, inflate_bounded, limit_for

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
ITEM_TAG = 0xFFFEE000
SEQUENCE_DELIMITER_TAG = 0xFFFEE0DD
PIXEL_TAGS = {0x7FE00008: "FloatPixelData", 0x7FE00009: "DoubleFloatPixelData", 0x7FE00010: "PixelData"}
# Explicit VR little endian: these VRs have a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Binary VRs whose value length must be a multiple of the value size; pydicom fails to decode them otherwise.
BINARY_VR_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "AT": 4, "FD": 8, "SV": 8, "UV": 8}
_ELEMENT_HEADER = struct.Struct("<HH")
_LENGTH_16 = struct.Struct("<H")
_LENGTH_32 = struct.Struct("<L")


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


@dataclass(frozen=True)
class PixelElement:
    """Where an image's pixels are, from the raw element header: what :func:`validate_dataset` checks.

    Attributes
    ----------
    keyword : str
        ``PixelData``, ``FloatPixelData`` or ``DoubleFloatPixelData``.
    length : int
        Bytes of the value (for undefined-length encapsulated pixel data: up to the sequence delimiter).
    first_bytes : bytes
        The first four bytes of the value (an item tag when the pixel data is encapsulated).
    """

    keyword: str
    length: int
    first_bytes: bytes


@dataclass(frozen=True)
class InspectedInstance:
    """A received data set checked by :func:`inspect_instance`, decoded only up to its pixel data.

    Attributes
    ----------
    header : Dataset
        Every top-level element before the pixel data (values decoded on access).
    transfer_syntax_uid : str
    sop_class_uid, sop_instance_uid, study_instance_uid, series_instance_uid : str
        Validated UIDs (digits and dots only: safe as file and folder names).
    """

    header: Dataset
    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str


def encode_file_meta(file_meta: FileMetaDataset, *, source_ae_title: str = "") -> bytes:
    """Encode the file meta group (with its group length) as it follows the preamble in a Part 10 file, with
    ``source_ae_title`` as Source Application Entity Title when given; ``file_meta`` itself is left as it is.

    The same bytes as pydicom's ``write_file_meta_info(..., enforce_standard=True)`` (which adds a missing File
    Meta Information Version and Implementation Class UID and checks the Type 1 elements), encoded directly when
    every element is a single text, bytes or UL value, which is what a received instance's file meta holds.

    Raises
    ------
    ValueError
        A Type 1 element is missing, or the group holds elements of another group.
    """
    if source_ae_title or not all(keyword in file_meta for keyword in _ADDED_BY_VALIDATION):
        # A copy with its own elements' dict (FileMetaDataset(file_meta) would share it): validation adds elements,
        # and so does the AE title.
        file_meta = FileMetaDataset(dict(file_meta.items()))
        if source_ae_title:
            file_meta.SourceApplicationEntityTitle = source_ae_title
    validate_file_meta(file_meta, enforce_standard=True)
    parts = []
    for tag in sorted(file_meta.keys()):
        if tag == 0x00020000:
            continue  # the group length, computed below
        element = file_meta[tag]
        encoded = _encode_meta_element(tag, element.VR, element.value)
        if encoded is None:
            return _encode_file_meta_with_pydicom(file_meta)
        parts.append(encoded)
    body = b"".join(parts)
    return _META_GROUP_LENGTH_HEADER + _LENGTH_32.pack(len(body)) + body


#: What ``validate_file_meta(..., enforce_standard=True)`` adds when it is missing.
_ADDED_BY_VALIDATION = ("FileMetaInformationVersion", "ImplementationClassUID")


def received_file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> FileMetaDataset:
    """The file meta of a data set received by C-STORE, as pynetdicom's ``Event.file_meta`` gives it.

    Built from elements that skip pydicom's value validation: pynetdicom validated the request's UIDs when it
    decoded them, the transfer syntax is the accepted context's, and :func:`inspect_instance` checks the data set
    against them. Building it through attribute assignment validated each UID again.
    """
    meta = FileMetaDataset()
    for tag, vr, value in (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", sop_class_uid),
        (0x00020003, "UI", sop_instance_uid),
        (0x00020010, "UI", transfer_syntax_uid),
        (0x00020012, "UI", PYNETDICOM_IMPLEMENTATION_UID),
        (0x00020013, "SH", PYNETDICOM_IMPLEMENTATION_VERSION),
    ):
        meta.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))
    return meta


_META_GROUP_LENGTH_HEADER = b"\x02\x00\x00\x00UL\x04\x00"


def _encode_meta_element(tag: int, vr: str, value: object) -> bytes | None:
    if isinstance(value, str):
        data = value.encode("ascii", errors="strict") if value.isascii() else None
        if data is None:
            return None
        if len(data) % 2:
            data += b"\0" if vr == "UI" else b" "
    elif isinstance(value, bytes):
        data = value + b"\0" if len(value) % 2 else value
    elif isinstance(value, int) and vr == "UL":
        data = _LENGTH_32.pack(value)
    else:
        return None  # multiple values, sequences: leave them to pydicom
    head = _ELEMENT_HEADER.pack(tag >> 16, tag & 0xFFFF) + vr.encode("ascii")
    if vr.encode("ascii") in LONG_LENGTH_VRS:
        return head + b"\0\0" + _LENGTH_32.pack(len(data)) + data
    if len(data) > 0xFFFF:
        return None
    return head + _LENGTH_16.pack(len(data)) + data


def _encode_file_meta_with_pydicom(file_meta: FileMetaDataset) -> bytes:
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
        # Only the file meta group is handed to pydicom: with a Deflated syntax it would inflate the whole data set.
        meta_bytes = file_bytes[: _file_meta_end(file_bytes)]
        file_meta = dcmread(BytesIO(meta_bytes), stop_before_pixels=True, specific_tags=[]).file_meta
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


def _file_meta_end(file_bytes: bytes) -> int:
    """Offset after the group 0002 elements that follow the preamble (explicit VR little endian, PS3.10 7.1)."""
    position = 132
    while len(file_bytes) - position >= 8 and _ELEMENT_HEADER.unpack_from(file_bytes, position)[0] == 0x0002:
        if file_bytes[position + 4 : position + 6] in LONG_LENGTH_VRS:
            if len(file_bytes) - position < 12:
                break
            position += 12 + _LENGTH_32.unpack_from(file_bytes, position + 8)[0]
        else:
            position += 8 + _LENGTH_16.unpack_from(file_bytes, position + 6)[0]
    return min(position, len(file_bytes))


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


def inspect_instance(
    dataset_bytes: bytes,
    file_meta: FileMetaDataset,
    *,
    max_image_pixels: int,
    context_sop_class_uid: str | None = None,
    affected_sop_instance_uid: str | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> InspectedInstance:
    """Decode a received data set up to its pixel data and check it as :func:`validate_dataset` does.

    Little endian syntaxes are read only up to the pixel data; the pixel data's length is checked from its raw
    element header (and the fragments of encapsulated pixel data are walked to their delimiter), so the pixels are
    never decoded or copied. Values of binary VRs (US, UL, FL, ...) are checked arithmetically for a length that
    fits the VR instead of being decoded. A Deflated data set is inflated in bounded chunks
    (:func:`dicomnode.store.inflate.inflate_bounded`) and then read as Explicit VR Little Endian; big endian data
    sets are decoded whole.

    Parameters
    ----------
    dataset_bytes : bytes
        The data set as received (no file meta).
    file_meta : FileMetaDataset
        Its TransferSyntaxUID says how the data set is encoded.
    max_image_pixels : int
    context_sop_class_uid, affected_sop_instance_uid : str, optional
        See :func:`validate_dataset`.
    max_inflated_bytes : int
        A Deflated data set inflating beyond this, or beyond what ``max_image_pixels`` can need, is refused.

    Returns
    -------
    InspectedInstance

    Raises
    ------
    CannotUnderstandError
        Truncated or undecodable data set, a value that breaks its VR, a malformed UID.
    DatasetMismatchError, OutOfResourcesError
        As :func:`validate_dataset`; also a Deflated data set that inflates beyond the limit (OutOfResources).
    """
    transfer_syntax = UID(str(file_meta.get("TransferSyntaxUID", "")))
    if not transfer_syntax.is_transfer_syntax:
        raise CannotUnderstandError(f"transfer syntax {transfer_syntax!r} is not known")
    if transfer_syntax.is_deflated:
        # The inflated bytes are only read here; the file keeps the data set as received (deflated). They count
        # against the budget shared by all associations until the check is done.
        with BUDGET.reservation(max_inflated_bytes) as reservation:
            inflated = inflate_bounded(dataset_bytes, limit_for(max_image_pixels, max_inflated_bytes), reservation)
            return _inspect_little_endian(
                inflated, transfer_syntax, max_image_pixels, context_sop_class_uid, affected_sop_instance_uid
            )
    if not transfer_syntax.is_little_endian:
        dataset = parse_instance(dataset_bytes, file_meta).dataset
        validate_dataset(
            dataset,
            transfer_syntax_uid=transfer_syntax,
            max_image_pixels=max_image_pixels,
            context_sop_class_uid=context_sop_class_uid,
            affected_sop_instance_uid=affected_sop_instance_uid,
        )
        return _inspected(dataset, transfer_syntax)
    return _inspect_little_endian(
        dataset_bytes, transfer_syntax, max_image_pixels, context_sop_class_uid, affected_sop_instance_uid
    )


def _inspect_little_endian(
    dataset_bytes: bytes,
    transfer_syntax: UID,
    max_image_pixels: int,
    context_sop_class_uid: str | None,
    affected_sop_instance_uid: str | None,
) -> InspectedInstance:
    header, position = _read_header(dataset_bytes, transfer_syntax.is_implicit_VR)
    pixels = _scan_tail(dataset_bytes, position, transfer_syntax.is_implicit_VR)
    try:
        _check_semantics(
            header,
            pixels,
            transfer_syntax,
            max_image_pixels,
            context_sop_class_uid,
            affected_sop_instance_uid,
        )
        return _inspected(header, transfer_syntax)
    except MyomapError:
        raise
    except Exception as error:  # pydicom raises several types for values that break their VR
        raise CannotUnderstandError(
            f"a value of the data set cannot be decoded ({type(error).__name__})"
        ) from error


def _inspected(dataset: Dataset, transfer_syntax: UID) -> InspectedInstance:
    return InspectedInstance(
        header=dataset,
        transfer_syntax_uid=str(transfer_syntax),
        sop_class_uid=_uid(dataset, "SOPClassUID"),
        sop_instance_uid=_uid(dataset, "SOPInstanceUID"),
        study_instance_uid=_uid(dataset, "StudyInstanceUID"),
        series_instance_uid=_uid(dataset, "SeriesInstanceUID"),
    )


def _at_pixels_checking_lengths(tag: BaseTag, vr: str | None, length: int) -> bool:
    """``stop_when`` of pydicom's reader: stop at the pixel data; refuse a binary value of impossible length.

    Checking here, from the element header the reader has already decoded, costs no second pass over the data
    set and no decoding of the values.
    """
    if tag in PIXEL_TAGS:
        return True
    size = BINARY_VR_SIZES.get(vr or _dictionary_vr(tag))
    if size is not None and length != UNDEFINED_LENGTH and length % size:
        # The message names the element only: a value that fails to decode may be patient data.
        raise CannotUnderstandError(
            f"element {tag} cannot be decoded under its VR ({length} bytes, not a multiple of {size})"
        )
    return False


def _read_header(data: bytes, implicit_vr: bool) -> tuple[Dataset, int]:
    """The elements before the pixel data, and the offset where reading stopped."""
    stream = BytesIO(data)
    try:
        header = read_dataset(stream, implicit_vr, True, stop_when=_at_pixels_checking_lengths)
    except MyomapError:
        raise
    except Exception as error:  # pydicom raises many types for malformed input; all mean "cannot understand"
        raise CannotUnderstandError(f"data set cannot be parsed: {type(error).__name__}: {error}") from error
    tags = list(header.keys())
    if tags:
        # Only the last element read can have been cut short by the end of the data.
        # pydicom's get_item overload says DataElement, but a value never accessed comes back as the
        # RawDataElement read from the stream (its is_raw is True; a DataElement's is False).
        raw = cast(DataElement | RawDataElement, header.get_item(tags[-1]))
        value = getattr(raw, "value", None)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != UNDEFINED_LENGTH
            and value is not None
            and len(value) < raw.length
        ):
            raise CannotUnderstandError(
                f"data set truncated: element {tags[-1]} declares {raw.length} bytes, only {len(value)} received"
            )
    return header, stream.tell()


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown element: no VR to check against
        return ""


def _scan_tail(data: bytes, position: int, implicit_vr: bool) -> dict[str, PixelElement]:
    """Walk the elements from the pixel data to the end by their headers; return the pixel elements found."""
    pixels: dict[str, PixelElement] = {}
    end_of_data = len(data)
    if position < end_of_data and _tag_at(data, position) not in PIXEL_TAGS:
        # pydicom stops quietly at a missing sequence delimiter, leaving the data short of its end.
        raise CannotUnderstandError(f"data set truncated: parsing stopped at byte {position} of {end_of_data}")
    while position < end_of_data:
        if end_of_data - position < 8:
            raise CannotUnderstandError(f"data set truncated: {end_of_data - position} bytes after the last element")
        tag = _tag_at(data, position)
        if implicit_vr:
            length, header_length = _LENGTH_32.unpack_from(data, position + 4)[0], 8
        elif data[position + 4 : position + 6] in LONG_LENGTH_VRS:
            if end_of_data - position < 12:
                raise CannotUnderstandError(f"data set truncated in the header of element {BaseTag(tag)}")
            length, header_length = _LENGTH_32.unpack_from(data, position + 8)[0], 12
        else:
            length, header_length = _LENGTH_16.unpack_from(data, position + 6)[0], 8
        start = position + header_length
        if length == UNDEFINED_LENGTH:
            if tag != 0x7FE00010:
                return pixels | _scan_rest(data, position, implicit_vr)
            position = _skip_fragments(data, start)
            length = position - start
        else:
            position = start + length
            if position > end_of_data:
                raise CannotUnderstandError(
                    f"data set truncated: element {BaseTag(tag)} declares {length} bytes, "
                    f"only {end_of_data - start} received"
                )
        if tag in PIXEL_TAGS:
            pixels[PIXEL_TAGS[tag]] = PixelElement(PIXEL_TAGS[tag], length, bytes(data[start : start + 4]))
    return pixels


def _scan_rest(data: bytes, position: int, implicit_vr: bool) -> dict[str, PixelElement]:
    # An undefined-length element after the pixel data (a sequence, in practice): let pydicom read the rest.
    stream = BytesIO(data[position:])
    try:
        rest = read_dataset(stream, implicit_vr, True)
    except Exception as error:
        raise CannotUnderstandError(f"data set cannot be parsed: {type(error).__name__}: {error}") from error
    if stream.tell() < len(data) - position:
        raise CannotUnderstandError(f"data set truncated: parsing stopped at byte {position + stream.tell()}")
    return {
        keyword: PixelElement(keyword, len(rest[tag].value), bytes(rest[tag].value[:4]))
        for tag, keyword in PIXEL_TAGS.items()
        if tag in rest and rest[tag].value is not None
    }


def _skip_fragments(data: bytes, position: int) -> int:
    """Offset after the sequence delimiter of encapsulated pixel data whose items start at ``position``."""
    end_of_data = len(data)
    while True:
        if end_of_data - position < 8:
            raise CannotUnderstandError("data set truncated: encapsulated Pixel Data ends before its delimiter")
        tag = _tag_at(data, position)
        length = _LENGTH_32.unpack_from(data, position + 4)[0]
        position += 8
        if tag == SEQUENCE_DELIMITER_TAG:
            return position
        if tag != ITEM_TAG or length == UNDEFINED_LENGTH:
            raise CannotUnderstandError(
                f"encapsulated Pixel Data holds {BaseTag(tag)} (length {length:#x}) where an item was expected"
            )
        position += length
        if position > end_of_data:
            raise CannotUnderstandError("data set truncated inside an encapsulated Pixel Data fragment")


def _tag_at(data: bytes, position: int) -> int:
    group, element = _ELEMENT_HEADER.unpack_from(data, position)
    return group << 16 | element


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
    _check_semantics(
        dataset,
        _pixel_elements(dataset),
        UID(transfer_syntax_uid),
        max_image_pixels,
        context_sop_class_uid,
        affected_sop_instance_uid,
    )


def _pixel_elements(dataset: Dataset) -> dict[str, PixelElement]:
    pixels = {}
    for keyword in PIXEL_TAGS.values():
        value = dataset.get(keyword)
        if value is not None:
            pixels[keyword] = PixelElement(keyword, len(value), bytes(value[:4]))
    return pixels


def _check_semantics(
    dataset: Dataset,
    pixels: dict[str, PixelElement],
    transfer_syntax: UID,
    max_image_pixels: int,
    context_sop_class_uid: str | None,
    affected_sop_instance_uid: str | None,
) -> None:
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
        _check_pixels(dataset, pixels, sop_class_uid, transfer_syntax, max_image_pixels)
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


def _check_pixels(
    dataset: Dataset,
    pixels: dict[str, PixelElement],
    sop_class_uid: str,
    transfer_syntax: UID,
    max_image_pixels: int,
) -> None:
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
    present = [keyword for keyword in ("PixelData", *float_keywords) if keyword in pixels]
    if not present:
        expected = " or ".join(("PixelData", *float_keywords))
        raise DatasetMismatchError(f"image SOP class {sop_class_uid} without {expected}")
    element = pixels[present[0]]
    keyword = element.keyword
    samples = _positive_int(dataset, "SamplesPerPixel", default=1 if keyword != "PixelData" else None)
    if keyword == "PixelData" and transfer_syntax.is_compressed:
        if not element.first_bytes.startswith(ENCAPSULATED_ITEM_TAG):
            raise DatasetMismatchError(
                f"Pixel Data is not encapsulated although the syntax {transfer_syntax} is"
            )
        return
    bits = {"FloatPixelData": 32, "DoubleFloatPixelData": 64}.get(keyword) or _positive_int(
        dataset, "BitsAllocated"
    )
    expected_bytes = -(-n_pixels * samples * bits // 8)
    if element.length not in (expected_bytes, expected_bytes + expected_bytes % 2):
        raise DatasetMismatchError(
            f"{keyword} holds {element.length} bytes, expected {expected_bytes} for {rows} x {columns} x "
            f"{frames} frames x {samples} samples x {bits} bits"
        )
