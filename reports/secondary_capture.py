"""A console result image as an RGB Secondary Capture (highdicom SCImage) in the source's study, new series.

The banner's verdict is also written as text (Image Comments) and the image's description as Derivation
Description, so a system that cannot show images still gets the message. Images that show the map's plane carry a
Patient Orientation from the source's Image Orientation (Patient); the bullseye and text panels, which are not
images of the patient, leave it empty.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from inference.slice_analysis import ALGORITHM_NAME
from reports.console_images import ConsoleImage
from reports.map_mr import SOFTWARE_VERSION

LOGGER = logging.getLogger(__name__)

#: The Series Description of a Secondary Capture series whose builder names none; the jobs name theirs
#: ("myomap T1 MOLLI mid SC", "myomap T1 study bullseye SC").
SERIES_DESCRIPTION = "myomap SC"
#: DICOM's limit on Series Description (VR LO).
MAX_DESCRIPTION_CHARS = 64
_AXIS_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))  # +x, -x; +y, -y; +z, -z in the patient coordinate system
_MIN_COSINE = 0.25  # a direction names an axis when its cosine with it is at least this large


def image_orientation(source: Dataset) -> list[float] | None:
    """Image Orientation (Patient) of a single-frame image or a multi-frame image's first frame."""
    if "ImageOrientationPatient" in source:
        return [float(v) for v in source.ImageOrientationPatient]
    for groups in (source.get("SharedFunctionalGroupsSequence"), source.get("PerFrameFunctionalGroupsSequence")):
        if groups and "PlaneOrientationSequence" in groups[0]:
            return [float(v) for v in groups[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    return None


def direction_letters(cosines: np.ndarray | Sequence[float]) -> str:
    """Patient direction of a unit vector, strongest axis first (PS3.3 C.7.6.1.1.1), e.g. ``"LP"``."""
    vector = np.asarray(cosines, dtype=np.float64)
    order = np.argsort(-np.abs(vector), kind="stable")
    letters = [_AXIS_LETTERS[axis][0 if vector[axis] > 0 else 1] for axis in order
               if abs(vector[axis]) >= _MIN_COSINE]
    return "".join(letters) or _AXIS_LETTERS[int(order[0])][0 if vector[order[0]] > 0 else 1]


def build_secondary_capture(
    image: ConsoleImage,
    source: Dataset,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int,
    series_description: str = SERIES_DESCRIPTION,
) -> hd.sc.SCImage:
    """Build an RGB Secondary Capture of a console image, in the study and for the patient of ``source``.

    ``series_description`` says what the series holds on the console's series list ("myomap T1 MOLLI mid SC").

    Raises
    ------
    ValueError
        If the image is not (rows, columns, 3) uint8, or the series description is longer than DICOM allows.
    """
    if not series_description or len(series_description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"a series description must have 1 to {MAX_DESCRIPTION_CHARS} characters, "
                         f"got {series_description!r}")
    rgb = np.asarray(image.rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"a console image must be (rows, columns, 3) uint8, got {rgb.shape} {rgb.dtype}")
    orientation = image_orientation(source) if image.in_image_plane else None
    directions = None
    if orientation is not None:
        directions = (direction_letters(orientation[:3]), direction_letters(orientation[3:]))
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=np.ascontiguousarray(rgb),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer="myomap",
        # highdicom accepts single letters only; the full oblique directions are set below.
        patient_orientation=("L", "P") if directions is None else (directions[0][0], directions[1][0]),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    if directions is not None:
        capture.PatientOrientation = list(directions)
    else:
        # Type 2, so present but empty. highdicom's SCImage infers list[str] from its own assignment; pydicom
        # takes None as the empty value.
        capture.PatientOrientation = None  # type: ignore[assignment]
    capture.ConversionType = "WSD"  # workstation: rendered by the node, not digitised
    capture.SeriesDescription = series_description
    capture.ImageComments = image.banner or image.description
    capture.DerivationDescription = f"{image.name}: {image.description}"[:1024]
    source_item = Dataset()
    source_item.ReferencedSOPClassUID = source.SOPClassUID
    source_item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    capture.SourceImageSequence = [source_item]
    capture.BodyPartExamined = source.get("BodyPartExamined") or "HEART"
    capture.BurnedInAnnotation = "NO"  # text, but nothing that identifies the patient
    capture.ManufacturerModelName = ALGORITHM_NAME
    capture.SoftwareVersions = SOFTWARE_VERSION
    capture.SecondaryCaptureDeviceManufacturer = "myomap"
    capture.SecondaryCaptureDeviceManufacturerModelName = ALGORITHM_NAME
    capture.SecondaryCaptureDeviceSoftwareVersions = SOFTWARE_VERSION
    LOGGER.debug("secondary capture %s: %s", sop_instance_uid, image.name)
    return capture


__all__ = [
    "MAX_DESCRIPTION_CHARS", "SERIES_DESCRIPTION", "build_secondary_capture", "direction_letters", "image_orientation",
]
