"""A reader's hand-drawn contours of one map image as a binary DICOM Segmentation, built with highdicom.

Readers without PACS access upload their contours on the web page in formats that are not DICOM (IDL SAVE files
of the IDL-based T1 tools, plain point lists). The node turns them into this object and stores it as if it had
arrived by C-STORE, so that the reader job scores it like any other reader's SEG: segment 1 "Left ventricle cavity"
and segment 2 "Myocardium", MANUAL, coded as :mod:`reports.codes` codes the structures; the reader's name in
Content Creator's Name (where the node reads a reader's identity first).
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from reports import codes
from reports.seg_model import CAVITY_LABEL, CAVITY_RGB, MYOCARDIUM_LABEL, MYOCARDIUM_RGB

LOGGER = logging.getLogger(__name__)

SERIES_DESCRIPTION_PREFIX = "reader contours uploaded"
#: Tracking identifier of the manual segments' algorithm: the uploading software, not a model.
UPLOAD_SOFTWARE = "myomap upload"


def _manual_segment(number: int, label: str, structure: codes.Structure,
                    rgb: tuple[int, int, int]) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label, segmented_property_category=structure.category,
        segmented_property_type=structure.property_type, anatomic_regions=[structure.region],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        display_color=hd.color.CIELabColor.from_rgb(*rgb),
    )


def _person_name(reader: str) -> PersonName:
    """The reader as a DICOM person name: ``Family^Given`` as given, a single word as the family name (written
    ``name^`` so that it is not read as a one-component name by mistake)."""
    name = reader.strip()[:63]
    return PersonName(name if "^" in name else f"{name}^")


def build_reader_segmentation(
    source: Dataset,
    *,
    cavity_mask: np.ndarray,
    myocardium_mask: np.ndarray,
    reader: str,
    source_format: str,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    software_version: str,
) -> hd.seg.Segmentation:
    """Build a BINARY Segmentation of one reader's LV cavity and myocardium on one map image.

    Parameters
    ----------
    source
        The single-frame map image (or single-slice multi-frame map) the contours were drawn on.
    cavity_mask, myocardium_mask
        (rows, columns) masks on ``source``.
    reader
        The reader's name, written as Content Creator's Name.
    source_format
        What the reader uploaded ("IDL SAVE", "point list"), in the Series Description.
    series_instance_uid, sop_instance_uid, series_number
        Identification of the new series and instance.
    software_version
        The node's version.

    Raises
    ------
    ValueError
        If a mask's shape is not the image's, the myocardium is empty or the reader's name is empty.
    """
    shape = (int(source.Rows), int(source.Columns))
    for name, mask in (("cavity_mask", cavity_mask), ("myocardium_mask", myocardium_mask)):
        if np.shape(mask) != shape:
            raise ValueError(f"{name} must have the image's shape {shape}, got {np.shape(mask)}")
    if not np.any(myocardium_mask):
        raise ValueError("myocardium_mask is empty: expected the reader's myocardium on the image")
    if not reader.strip():
        raise ValueError("reader must name the reader, got an empty name")
    descriptions = [
        _manual_segment(1, CAVITY_LABEL, codes.LV_BLOOD_POOL, CAVITY_RGB),
        _manual_segment(2, MYOCARDIUM_LABEL, codes.LV_MYOCARDIUM, MYOCARDIUM_RGB),
    ]
    planes = np.stack([np.asarray(cavity_mask, dtype=bool), np.asarray(myocardium_mask, dtype=bool)], axis=-1)
    segmentation = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=planes[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer="myomap",
        manufacturer_model_name=UPLOAD_SOFTWARE,
        software_versions=software_version,
        device_serial_number="0",
        content_label="READER",
        content_description=f"contours of {reader}"[:64],
        content_creator_name=_person_name(reader),
        omit_empty_frames=False,
    )
    segmentation.SeriesDescription = f"{SERIES_DESCRIPTION_PREFIX} ({source_format})"[:64]
    LOGGER.debug("reader segmentation %s from %s", sop_instance_uid, source_format)
    return segmentation


__all__ = ["SERIES_DESCRIPTION_PREFIX", "UPLOAD_SOFTWARE", "build_reader_segmentation"]
