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

import pynetdicom.dimse_messages
from pydicom import Dataset
from pynetdicom.dsutils import encode as pydicom_encode

_ELEMENT_HEADER = struct.Struct("<HHI")
_INTEGER_FORMATS = {"US": struct.Struct("<H"), "UL": struct.Struct("<I")}
_INTEGER_LIMITS = {"US": 1 << 16, "UL": 1 << 32}
#: Text VRs padded to even length with a space; UI is padded with a NUL (PS3.5 6.2).
_TEXT_VRS = frozenset({"AE", "CS", "LO", "SH", "ST", "LT"})


def encode_command_set(command_set: Dataset) -> bytes | None:
    """``command_set`` in Implicit VR Little Endian, as pydicom writes it (None where pydicom cannot either)."""
    return _encode(command_set, True, True)


def _plain(command_set: Dataset) -> bytes | None:
    """The command set's encoding, or None when an element is not one this module encodes itself."""
    encoded = []
    for tag in sorted(command_set.keys()):
        element = command_set[tag]
        vr, value = element.VR, element.value
        if value is None or value == "":
            payload = b""
        elif vr in _INTEGER_FORMATS and type(value) is int and 0 <= value < _INTEGER_LIMITS[vr]:
            payload = _INTEGER_FORMATS[vr].pack(value)
        elif (vr == "UI" or vr in _TEXT_VRS) and isinstance(value, str) and value.isascii() and "\\" not in value:
            payload = value.encode("ascii")
            if len(payload) % 2:
                payload += b"\0" if vr == "UI" else b" "
        else:
            return None
        encoded += [_ELEMENT_HEADER.pack(tag >> 16, tag & 0xFFFF, len(payload)), payload]
    return b"".join(encoded)


def _encode(dataset: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False) -> bytes | None:
    """pynetdicom's ``encode``: command sets (Implicit VR Little Endian) directly where they are plain, everything
    else by pydicom."""
    if is_implicit_vr and is_little_endian and not deflated:
        plain = _plain(dataset)
        if plain is not None:
            return plain
    return pydicom_encode(dataset, is_implicit_vr, is_little_endian, deflated)


def use_fast_command_sets() -> None:
    """Make pynetdicom encode DIMSE command sets with :func:`encode_command_set` (idempotent; process-wide)."""
    pynetdicom.dimse_messages.encode = _encode  # type: ignore[assignment]
