"""IDL SAVE contour files, written here by a minimal writer of float arrays (scipy reads the format, not writes).

The record layout follows the IDL SAVE format as scipy.io.readsav reads it: the signature ``SR\\x00\\x04``, then
records of (type, offset of the next record as two 32-bit halves, 4 spare bytes, body); a VARIABLE record's body
is the name, a type descriptor (type code 4 = float32, flag 4 = array), an array descriptor (start 8, byte and
element counts, dimensions fastest first), the start marker 7 and the big-endian data; an END_MARKER closes.
"""

import struct

import numpy as np
import pytest

from dicomnode.io.contours import ContourFormatError, ImageGeometry, Structure, read_idl_sav, sav_contours
from dicomnode.io.contours.model import polygon_mask

VARIABLE, END_MARKER = 2, 6
FLOAT32, ARRAY_FLAG = 4, 4


def _long(value):
    return struct.pack(">l", value)


def _string(text):
    data = text.encode("latin1")
    return _long(len(data)) + data + b"\0" * (-len(data) % 4)


def _variable_body(name, array):
    array = np.ascontiguousarray(array, dtype=">f4")
    dims = list(reversed(array.shape)) + [1] * (8 - array.ndim)  # IDL dimensions run fastest first
    descriptor = (_long(8) + _long(0) + _long(array.nbytes) + _long(array.size) + _long(array.ndim)
                  + _long(0) + _long(0) + _long(8) + b"".join(_long(d) for d in dims))
    data = array.tobytes()
    return (_string(name.upper()) + _long(FLOAT32) + _long(ARRAY_FLAG) + descriptor + _long(7) + data
            + b"\0" * (-len(data) % 4))


def write_sav(path, variables):
    """An uncompressed IDL SAVE file holding float32 arrays."""
    out = bytearray(b"SR\x00\x04")
    bodies = [(VARIABLE, _variable_body(name, array)) for name, array in variables.items()] + [(END_MARKER, b"")]
    for record_type, body in bodies:
        next_record = len(out) + 16 + len(body)
        out += _long(record_type) + struct.pack(">II", next_record, 0) + b"\0" * 4 + body
    path.write_bytes(bytes(out))
    return path


GEOMETRY = ImageGeometry(64, 64, (1.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0), "1.2.826.0.1.3680043.8.498.7", "1.2")


def circle(radius, n=60, centre=(32.0, 30.0)):
    theta = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(theta), centre[1] + radius * np.sin(theta)], axis=1)


def test_endo_and_epi_arrays_give_nested_masks(tmp_path):
    endo, epi = circle(8.0), circle(13.0)
    path = write_sav(tmp_path / "contours.sav", {"endo_x": endo[:, 0], "endo_y": endo[:, 1],
                                                  "epi_x": epi[:, 0], "epi_y": epi[:, 1]})
    contours = read_idl_sav(path, GEOMETRY, reader="analyst")
    assert contours.source_format == "IDL SAVE" and contours.reader == "analyst"
    np.testing.assert_allclose(contours.contours["cavity"][GEOMETRY.sop_instance_uid][0], endo, atol=1e-4)
    masks = contours.to_masks()
    cavity = masks.mask(Structure.CAVITY, GEOMETRY.sop_instance_uid)
    myocardium = masks.mask(Structure.MYOCARDIUM, GEOMETRY.sop_instance_uid)
    np.testing.assert_array_equal(cavity, polygon_mask(GEOMETRY.shape, endo))
    assert abs(int(myocardium.sum()) - np.pi * (13.0**2 - 8.0**2)) < 0.1 * np.pi * (13.0**2 - 8.0**2)
    assert not (cavity & myocardium).any()


def test_point_arrays_of_shape_n_by_2_and_other_names(tmp_path):
    endo = circle(6.0)
    path = write_sav(tmp_path / "points.sav", {"lv_endo": endo, "x_epi": circle(10.0)[:, 0],
                                                "y_epi": circle(10.0)[:, 1]})
    borders = read_idl_sav(path, GEOMETRY, reader="r").contours
    assert set(borders) == {"cavity", "epicardium"}
    np.testing.assert_allclose(borders["cavity"][GEOMETRY.sop_instance_uid][0], endo, atol=1e-4)


def test_structures_as_readsav_returns_them():
    endo, epi = circle(5.0), circle(9.0)
    roi = np.recarray((1,), dtype=[(("endo_x", "ENDO_X"), object), (("endo_y", "ENDO_Y"), object)])
    roi[0].endo_x, roi[0].endo_y = endo[:, 0], endo[:, 1]
    border = np.recarray((1,), dtype=[(("x", "X"), object), (("y", "Y"), object)])
    border[0].x, border[0].y = epi[:, 0], np.where(np.arange(epi.shape[0]) == 3, np.nan, epi[:, 1])
    found = sav_contours({"roi": roi, "epicardium": border})
    np.testing.assert_array_equal(found["cavity"], endo)
    assert found["epicardium"].shape == (epi.shape[0] - 1, 2)  # the non-finite point is dropped


def test_unusable_files_are_refused(tmp_path):
    with pytest.raises(ContourFormatError, match="expected e.g. endo_x"):
        read_idl_sav(write_sav(tmp_path / "t1.sav", {"t1_map": np.ones(4)}), GEOMETRY, reader="r")
    with pytest.raises(ContourFormatError, match="expected equal"):
        read_idl_sav(write_sav(tmp_path / "bad.sav", {"endo_x": np.ones(5), "endo_y": np.ones(4)}), GEOMETRY,
                     reader="r")
    with pytest.raises(ContourFormatError, match="only"):
        sav_contours({"epi_x": np.ones(5)})
    (tmp_path / "text.sav").write_text("not idl")
    with pytest.raises(ContourFormatError, match="not a readable IDL SAVE"):
        read_idl_sav(tmp_path / "text.sav", GEOMETRY, reader="r")
