"""Hostile and malformed DICOM inputs for the fuzz test and the soak benchmark: deflate bombs and mutated files.

Everything is deterministic for a given seed, so a failure names the input that caused it.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

MIB = 1024 * 1024
_ZEROS = bytes(MIB)


def phantom_like_image(*, rows: int = 32, columns: int = 32, seed: int = 0, study_uid: str | None = None,
                       series_uid: str | None = None, patient_id: str = "FUZZ-0001",
                       uid_key: str | None = None) -> Dataset:
    """A valid MR Image Storage instance (uint16 pixels, Explicit VR Little Endian file meta).

    With ``uid_key`` its UIDs are derived from it (the same key, the same UIDs), else they are random.
    """

    def uid(part: str) -> str:
        return generate_uid(entropy_srcs=[uid_key, part]) if uid_key is not None else generate_uid()

    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = uid("sop")
    ds.PatientName = "Fuzz^Case"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid or uid("study")
    ds.SeriesInstanceUID = series_uid or uid("series")
    ds.StudyDate = "20240301"
    ds.Modality = "MR"
    ds.SeriesNumber = 900
    ds.InstanceNumber = 1
    ds.SeriesDescription = "fuzz"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
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
    ds.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    return ds


def _file_meta(ds: Dataset, transfer_syntax_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    return meta


def part10(ds: Dataset, transfer_syntax_uid: str | None = None) -> bytes:
    """The data set as a Part 10 file, in ``transfer_syntax_uid`` (default: its file meta's)."""
    if transfer_syntax_uid is not None:
        ds.file_meta = _file_meta(ds, transfer_syntax_uid)
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def deflate_bomb(inflated_bytes: int, *, rows: int = 32, columns: int = 32) -> bytes:
    """A Deflated Explicit VR Little Endian MR image, valid in every tag, padded with a private OB element of
    zeros so that its data set inflates to about ``inflated_bytes`` while the file stays about a thousandth of it.
    """
    ds = phantom_like_image(rows=rows, columns=columns)
    pixel_data = ds.PixelData
    del ds.PixelData
    ds.add_new(0x00090010, "LO", "FUZZ BOMB")
    header = _explicit_le(ds)  # every element before (0009,1000), which sorts before the pixel data
    padding = max(inflated_bytes - len(header) - len(pixel_data), 0)
    padding -= padding % 2
    padding_header = b"\x09\x00\x00\x10OB\x00\x00" + struct.pack("<L", padding)
    pixel_element = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", len(pixel_data)) + pixel_data
    # Byte-aligned blocks from fresh compressors (no back-references between them) may be concatenated, so the
    # compressed MiB of zeros is made once and repeated: a 2 GB bomb takes milliseconds.
    whole_mibs, rest = divmod(padding, MIB)
    parts = [_deflate_blocks(header + padding_header), _deflate_blocks(_ZEROS) * whole_mibs,
             _deflate_blocks(bytes(rest) + pixel_element, last=True)]
    meta = _file_meta(ds, DeflatedExplicitVRLittleEndian)
    meta_bytes = _meta_bytes(meta)
    return meta_bytes + b"".join(parts)


def _deflate_blocks(data: bytes, *, last: bool = False) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)


def _explicit_le(ds: Dataset) -> bytes:
    copy = Dataset(ds)
    copy.file_meta = _file_meta(ds, ExplicitVRLittleEndian)
    whole = part10(copy)
    return whole[_data_set_offset(whole):]


def _meta_bytes(meta: FileMetaDataset) -> bytes:
    carrier = Dataset()
    carrier.file_meta = meta
    whole = part10(carrier)
    return whole[: _data_set_offset(whole)]


def _data_set_offset(part10_bytes: bytes) -> int:
    group_length = struct.unpack_from("<L", part10_bytes, 132 + 8)[0]
    return 132 + 12 + group_length


@dataclass(frozen=True)
class MutatedInput:
    """One fuzz input: what was done to it (for the failure message) and the Part 10 bytes."""

    kind: str
    file_bytes: bytes


MUTATIONS = ("truncate", "flip_bytes", "corrupt_vr", "length_lie", "deep_sequence", "rle_garbage",
             "deflate_garbage", "deflate_truncated", "implicit_truncate", "absurd_size")


def mutated_inputs(count: int, *, seed: int) -> Iterator[MutatedInput]:
    """``count`` malformed Part 10 files, cycling through :data:`MUTATIONS` with a fixed seed."""
    rng = random.Random(seed)
    for index in range(count):
        kind = MUTATIONS[index % len(MUTATIONS)]
        base = phantom_like_image(rows=rng.choice((8, 16, 32)), columns=16, seed=index, uid_key=f"{seed}-{index}")
        yield MutatedInput(kind, _MUTATORS[kind](base, rng))


def _data_set(ds: Dataset, transfer_syntax_uid: str = ExplicitVRLittleEndian) -> tuple[bytes, bytes]:
    whole = part10(ds, transfer_syntax_uid)
    offset = _data_set_offset(whole)
    return whole[:offset], whole[offset:]


def _positions_of_vrs(data: bytearray, vrs: tuple[bytes, ...]) -> list[int]:
    """Offsets where an element header with one of these VRs may start (a byte pattern; some are not headers)."""
    return [i for i in range(0, len(data) - 8) if bytes(data[i + 4 : i + 6]) in vrs]


def _truncate(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds)
    return meta + body[: rng.randrange(1, len(body) - 1)]


def _implicit_truncate(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds, ImplicitVRLittleEndian)
    return meta + body[: rng.randrange(1, len(body) - 1)]


def _flip_bytes(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds)
    data = bytearray(body)
    for _ in range(rng.randint(1, 12)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return meta + bytes(data)


def _corrupt_vr(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds)
    data = bytearray(body)
    positions = _positions_of_vrs(data, (b"UI", b"US", b"DA", b"CS", b"IS"))
    for position in rng.sample(positions, min(len(positions), rng.randint(1, 3))):
        data[position + 4 : position + 6] = rng.choice((b"SQ", b"OB", b"ZZ", b"UN", b"FD", b"\x00\x00"))
    return meta + bytes(data)


def _length_lie(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds)
    data = bytearray(body)
    positions = _positions_of_vrs(data, (b"UI", b"LO", b"CS", b"DA", b"PN"))
    position = rng.choice(positions)
    honest = struct.unpack_from("<H", data, position + 6)[0]
    struct.pack_into("<H", data, position + 6, rng.choice((0xFFFF, 0xFFFE, honest + 7)))
    return meta + bytes(data)


def _deep_sequence(ds: Dataset, rng: random.Random) -> bytes:
    """Content Sequence items nested ``depth`` deep, encoded by hand (undefined lengths): pydicom's own writer
    recurses once per level and cannot write the deepest."""
    depth = rng.choice((20, 200, 2000))
    pixel_data = ds.PixelData
    del ds.PixelData
    meta, header = _data_set(ds)
    undefined = b"\xff\xff\xff\xff"
    opening = b"\x40\x00\x30\xa7SQ\x00\x00" + undefined + b"\xfe\xff\x00\xe0" + undefined
    closing = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    innermost = b"\x08\x00\x00\x01SH\x02\x00X "
    nested = opening * depth + innermost + closing * depth
    pixels = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<L", len(pixel_data)) + pixel_data
    return meta + header + nested + pixels


def _rle_garbage(ds: Dataset, rng: random.Random) -> bytes:
    frame = bytes(rng.randrange(256) for _ in range(rng.randint(8, 200)))
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return part10(ds, RLELossless)


def _deflate_garbage(ds: Dataset, rng: random.Random) -> bytes:
    meta, _ = _data_set(ds, DeflatedExplicitVRLittleEndian)
    return meta + bytes(rng.randrange(256) for _ in range(rng.randint(16, 4096)))


def _deflate_truncated(ds: Dataset, rng: random.Random) -> bytes:
    meta, body = _data_set(ds, DeflatedExplicitVRLittleEndian)
    return meta + body[: rng.randrange(1, len(body) - 1)]


def _absurd_size(ds: Dataset, rng: random.Random) -> bytes:
    ds.Rows = 65535
    ds.Columns = 65535
    ds.NumberOfFrames = rng.choice((1, 1000))
    return part10(ds)


_MUTATORS = {
    "truncate": _truncate,
    "flip_bytes": _flip_bytes,
    "corrupt_vr": _corrupt_vr,
    "length_lie": _length_lie,
    "deep_sequence": _deep_sequence,
    "rle_garbage": _rle_garbage,
    "deflate_garbage": _deflate_garbage,
    "deflate_truncated": _deflate_truncated,
    "implicit_truncate": _implicit_truncate,
    "absurd_size": _absurd_size,
}
