"""DIMSE command sets encoded without pydicom's general writer.

A command set is a handful of group 0000 elements, always Implicit VR Little Endian (PS3.7 6.3.1). pynetdicom
encodes each with pydicom's ``write_dataset`` twice per message (once to measure the Command Group Length, once to
send it): about 0.3 ms each on the 2-core machine, a fifth of what a do-nothing pynetdicom SCP spends per C-STORE.
:func:`encode_command_set` writes the same bytes directly for the value representations command sets use (UL, US,
UI and the short text VRs) and hands any other element (an AT list such as Offending Element, a non-ASCII Error
Comment) to pydicom. :func:`use_fast_command_sets` points pynetdicom's DIMSE message module at it; the result is
byte for byte pynetdicom's own (tests/unit/dicomnode/net/test_command_set.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pynetdicom.dimse_messages
from pydicom import DataElement, Dataset
from pynetdicom.dsutils import encode as pydicom_encode

_ELEMENT_HEADER = struct.Struct("<HHI")
_INTEGER_FORMATS = {"US": struct.Struct("<H"), "UL": struct.Struct("<I")}
_INTEGER_LIMITS = {"US": 1 << 16, "UL": 1 << 32}
#: Text VRs padded to even length with a space; UI is padded with a NUL (PS3.5 6.2).
_TEXT_VRS = frozenset({"AE", "CS", "LO", "SH", "ST", "LT"})


class _NotPlainError(Exception):
    """An element this module does not encode itself."""


def encode_command_set(command_set: Dataset) -> bytes:
    """``command_set`` in Implicit VR Little Endian, as pydicom writes it."""
    try:
        return b"".join(_element(command_set[tag]) for tag in sorted(command_set.keys()))
    except _NotPlainError:
        return bytes(pydicom_encode(command_set, True, True) or b"")


def _element(element: DataElement) -> bytes:
    tag, vr, value = element.tag, element.VR, element.value
    if value is None or value == "":
        encoded = b""
    elif vr in _INTEGER_FORMATS and type(value) is int and 0 <= value < _INTEGER_LIMITS[vr]:
        encoded = _INTEGER_FORMATS[vr].pack(value)
    elif (vr == "UI" or vr in _TEXT_VRS) and isinstance(value, str) and value.isascii() and "\\" not in value:
        encoded = value.encode("ascii")
        if len(encoded) % 2:
            encoded += b"\0" if vr == "UI" else b" "
    else:
        raise _NotPlainError
    return _ELEMENT_HEADER.pack(tag >> 16, tag & 0xFFFF, len(encoded)) + encoded


def _encode(dataset: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
    """pynetdicom's ``encode`` signature; only command sets (Implicit VR Little Endian) take the fast path."""
    if is_implicit_vr and is_little_endian and not deflated:
        return encode_command_set(dataset)
    return pydicom_encode(dataset, is_implicit_vr, is_little_endian, deflated)


def use_fast_command_sets() -> None:
    """Make pynetdicom encode DIMSE command sets with :func:`encode_command_set` (idempotent; process-wide)."""
    module: object = pynetdicom.dimse_messages
    encode: Callable[..., bytes | None] = _encode
    module.encode = encode  # type: ignore[attr-defined]
