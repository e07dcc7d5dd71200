"""Readers of contour objects (DICOM-SEG, RTSTRUCT, IDL SAVE, point lists) into masks on the referenced images."""

from dicomnode.io.contours.errors import ContourFormatError, UnknownReaderError, UnresolvedReferenceError
from dicomnode.io.contours.idl_sav import read_idl_sav, sav_contours
from dicomnode.io.contours.model import (
    CODE_STRUCTURES,
    LABEL_STRUCTURES,
    ContourSet,
    ImageGeometry,
    ReaderMasks,
    Structure,
    derive_myocardium,
    polygon_mask,
    structure_label,
)
from dicomnode.io.contours.point_list import (
    contour_set_from_point_lists,
    parse_point_list,
    read_point_list,
    read_sunnybrook,
)
from dicomnode.io.contours.reader_identity import DEFAULT_IDENTITY_ORDER, IdentitySource, reader_name
from dicomnode.io.contours.rtstruct import read_rtstruct, read_rtstruct_contours
from dicomnode.io.contours.seg import read_seg

__all__ = [
    "CODE_STRUCTURES",
    "DEFAULT_IDENTITY_ORDER",
    "LABEL_STRUCTURES",
    "ContourFormatError",
    "ContourSet",
    "IdentitySource",
    "ImageGeometry",
    "ReaderMasks",
    "Structure",
    "UnknownReaderError",
    "UnresolvedReferenceError",
    "contour_set_from_point_lists",
    "derive_myocardium",
    "parse_point_list",
    "polygon_mask",
    "read_idl_sav",
    "read_point_list",
    "read_rtstruct",
    "read_rtstruct_contours",
    "read_seg",
    "read_sunnybrook",
    "reader_name",
    "sav_contours",
    "structure_label",
]
